"""Felix's calculation graph: pure, synchronous, single-threaded; datastore updates in,
dataplane messages (``tortie.felix.proto``) out."""
