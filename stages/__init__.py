"""One module per DVC stage; each has a main() and keeps to reading inputs and writing outputs."""
