"""Between the HTTP workers and the engine processes: framed messages over Unix sockets, shared
memory, and the workers' client."""
