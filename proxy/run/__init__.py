"""Running the process: start-up checks, the worker supervisor, hot reload, trial tools."""
