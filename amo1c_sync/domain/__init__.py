"""Pure logic: no I/O, no clocks read here (time is passed in)."""
