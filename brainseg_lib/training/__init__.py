"""The training stage: configuration (``config``), losses (``losses``), the engine that
fits a U-Net and checkpoints it (``engine``), the LR schedule (``schedule``), allocator tuning
(``memory``) and DistributedDataParallel under torchrun (``distributed``).
"""
