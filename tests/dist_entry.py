"""What the distributed tests launch with torchrun: main.main on each argument list (lists separated by
`--then`), one thread per process, in one process group (torchrun's store does not take a second group
after the first is destroyed, so main.main's close is deferred to the end). With FAIL_RANK=r, process r
raises a UserError in the reconstruction, as a rank whose share of the data is bad would."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import main  # noqa: E402


def _failing_reconstruction(*args, **kwargs):
    from utils.errors import UserError
    raise UserError(f"injected failure in the reconstruction of process {os.environ['RANK']}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    if os.environ.get("FAIL_RANK") == os.environ.get("RANK"):
        import prune.methods
        prune.methods.reconstruct_weights = _failing_reconstruction
    import utils.distributed
    close, utils.distributed.close = utils.distributed.close, lambda dist: None
    main.close = utils.distributed.close          # main.py calls the name it imported: keep one group for all runs
    argvs, current = [], []
    for arg in sys.argv[1:] + ["--then"]:
        if arg == "--then":
            argvs.append(current)
            current = []
        else:
            current.append(arg)
    for argv in argvs:
        code = main.main(argv)
        if code:
            sys.exit(code)
    close(utils.distributed.init_from_env("cpu"))
