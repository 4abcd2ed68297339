"""What operators run and read: the command line, metrics, the invariant checker, rendering."""
