"""The Edge Impulse stand-in: ingestion, the Studio API by area, samples, keys, training jobs."""
