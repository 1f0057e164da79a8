"""The simulated world: synthetic renderer and scenes, the synthetic camera, the oracle labeler, synthetic pre-training.

Workshop and test equipment, not product code: only the simulated device and the headless labeler import it.
"""
