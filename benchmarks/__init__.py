"""Side-by-side speed and memory benchmarks of attnlab against the peers a user would pick instead."""
