"""Publication of a log beyond its own process: object stores, directories, leases, rebuild.

* :mod:`translog.publish.store`: the ``ObjectStore`` protocol with two backends, S3 (botocore)
  and a plain directory (served by nginx or any static server).
* :mod:`translog.publish.layout`: which objects a tree of a given size needs, the private
  payload bundles and the checkpoint history objects.
* :mod:`translog.publish.publisher`: the background task that copies the durable log to the
  store, tiles first and the checkpoint last, and never blocks the sequencer.
* :mod:`translog.publish.lease`: the single-writer lease (a lock object written with
  conditional requests).
* :mod:`translog.publish.rebuild`: a data directory rebuilt from the store.
"""
