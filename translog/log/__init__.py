"""The log: sequencer, checkpoint publisher, submission semantics, fsck, the data directory."""
