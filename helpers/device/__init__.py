"""Device side: camera sources, the edge agent, module runtimes, collector and runner."""
