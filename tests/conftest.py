"""Suite-wide settings.

One torch thread in the test process, whatever ran before: the tests' tensors are small, where a second
intra-op thread costs more than it saves, and on a machine whose cores are busy with other jobs its
spin-waits made single tests up to 35x slower (a 400-step toy game: 112 s at torch's default of 2 threads
beside two training jobs, 3.2 s at 1). A CLI test's ``--threads 1`` also set it for every later test, so
without this the suite's speed depended on its order. Subprocesses the tests start choose their own."""

import torch


def pytest_configure(config):
    torch.set_num_threads(1)
