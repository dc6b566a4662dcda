"""Never lose a user's files (issue 17): each class of the issue as a test that checks the exit
status, the one-line message and that the user's files are byte-identical afterwards.

Tiny random models on CPU; each test takes seconds.
"""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from tests.test_errors import GOOD_TRAIN, REPO, SENTENCES, _argv, _glue, _save_ckpt, assert_user_error, run_main

SAVE = ["--save_pruned", "--speed_batch_size", "1", "--speed_seq_len", "8"]


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tokenizer):
    return _save_ckpt(tmp_path_factory.mktemp("ckpt"), tokenizer)


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    return _glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="module")
def slow_data(tmp_path_factory):
    rows = [f"{s} number {i}\t{y}" for i in range(120) for s, y in SENTENCES]
    return _glue(tmp_path_factory.mktemp("slow"), train="sentence\tlabel\n" + "\n".join(rows) + "\n")


def snapshot(*roots) -> dict:
    """Every file under `roots`: path -> bytes (and the folders, so that a removed empty one shows)."""
    files = {}
    for root in map(str, roots):
        for folder, dirs, names in os.walk(root):
            files[folder] = None
            for name in names:
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    files[path] = f.read()
    return files


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _start(argv, prelude=""):
    """`main.main(argv)` in a subprocess, after `prelude` (Python, e.g. a monkeypatch)."""
    code = f"import sys; sys.path.insert(0, {REPO!r}); {prelude}\nimport main; sys.exit(main.main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, argv)], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_log(proc, log, needle="unpruned", timeout=120):
    deadline = time.monotonic() + timeout
    while not (log.is_file() and needle in log.read_text()):
        assert proc.poll() is None, f"main.py ended early: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"main.py never logged {needle!r}"
        time.sleep(0.05)


def _pruned_run_id(folder):
    return json.loads((folder / "pruning.json").read_text()).get("run_id")


# ----------------------------------------------------------------------------- 1. nothing deleted that the run did not create

def _user_folder(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    return user


def _other_model(tmp_path, ckpt, sst2, capsys):
    """A pruned model saved by an earlier run, outside the new run's folder."""
    assert run_main(_argv(ckpt, sst2, tmp_path / "earlier", *SAVE[:1], str(tmp_path / "model"), *SAVE[1:]),
                    capsys)[0] == 0
    return tmp_path / "model"


@pytest.mark.parametrize("target, needles", [
    (lambda t, **_: _user_folder(t), ["is not a pruned model saved by this tool", "does not exist yet"]),
    (lambda t, **_: "..", ["is --output_dir or a folder above it"]),
    (lambda t, **_: ".", ["is --output_dir or a folder above it"]),
    (lambda t, ckpt, **_: ckpt, ["is --ckpt_dir or a folder above it"]),
    (lambda t, ckpt, **_: os.path.dirname(ckpt), ["or a folder above it"]),
    (lambda t, ckpt, **_: os.path.join(ckpt, "pruned"), ["is inside --ckpt_dir"]),
    (lambda t, **_: (t / "afile").write_text("x") and t / "afile", ["exists and is not a folder"]),
    (lambda t, ckpt, sst2, capsys: _other_model(t, ckpt, sst2, capsys), ["already holds a pruned model",
                                                                           "--overwrite"]),
], ids=["user-folder", "parent", "run-folder", "ckpt", "above-ckpt", "inside-ckpt", "file", "other-model"])
def test_save_pruned_target_that_would_lose_files_is_refused_up_front(target, needles, ckpt, sst2, tmp_path,
                                                                       capsys):
    save = target(tmp_path, ckpt=ckpt, sst2=sst2, capsys=capsys)
    out = tmp_path / "out"
    before = snapshot(tmp_path, ckpt)
    code, err = run_main(_argv(ckpt, sst2, out, "--save_pruned", str(save)), capsys)
    assert_user_error(code, err, "--save_pruned", *needles)
    assert snapshot(tmp_path, ckpt) == before                  # byte-identical, and nothing created
    assert not out.exists()                                    # refused before the run folder


def test_output_dir_with_files_this_tool_did_not_write_is_refused(ckpt, sst2, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "head_mask.pt").write_bytes(b"the original tool's masks")
    (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, err = run_main(_argv(ckpt, sst2, out, "--overwrite"), capsys)
    assert_user_error(code, err, "--output_dir", "did not write (head_mask.pt)", "new or empty --output_dir")
    assert snapshot(tmp_path) == before


def test_overwrite_removes_only_this_tools_outputs(ckpt, sst2, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_main(_argv(ckpt, sst2, out, *SAVE), capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    (out / "keep").mkdir()
    (out / "keep" / "pruning.json").write_text("{}")          # looks like a model by name only
    (out / "data.tmp-abcdefgh").mkdir()                        # a temp-like name that is not ours
    mine = {k: v for k, v in snapshot(out).items() if "notes" in k or "keep" in k or "data.tmp" in k}
    assert run_main(_argv(ckpt, sst2, out, "--overwrite", "--method", "kwon"), capsys)[0] == 0
    after = snapshot(out)
    assert all(after.get(k, "gone") == v for k, v in mine.items())
    assert not (out / "pruned_model").exists()                 # the old run's model: its own output


# ----------------------------------------------------------------------------- 2. one run per output folder

def test_second_run_on_a_busy_folder_is_refused_and_sigterm_cleans_up(ckpt, slow_data, sst2, tmp_path, capsys):
    out = tmp_path / "out"
    first = _start(_argv(ckpt, slow_data, out, "--num_samples", "720", "--batch_size", "1", *SAVE))
    try:
        _wait_for_log(first, out / "log.txt")
        lock = json.loads((out / "run.lock").read_text())
        assert lock["pid"] == first.pid and lock["host"] == socket.gethostname() and lock["started"]
        log_before = (out / "log.txt").read_text()
        code, err = run_main(_argv(ckpt, sst2, out, "--overwrite"), capsys)
        assert_user_error(code, err, "is in use by another run", f"pid {first.pid}", "wait for it to finish")
        assert (out / "log.txt").read_text().startswith(log_before)     # the first run's log, not replaced
        assert first.poll() is None
        first.send_signal(signal.SIGTERM)                              # SIGTERM: the same clean-up as Ctrl-C
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 143, err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1].startswith("interrupted")
    assert not (out / "run.lock").exists() and not (out / "results.json").exists()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_is_taken_over_with_a_warning(ckpt, sst2, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                              "started": "2024-01-01T00:00:00", "run_id": "dead"}))
    assert run_main(_argv(ckpt, sst2, out), capsys)[0] == 0
    assert "took over the stale lock" in (out / "log.txt").read_text()
    assert not (out / "run.lock").exists()


def test_lock_of_another_machine_is_reported(ckpt, sst2, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x", "run_id": "r"}))
    before = snapshot(out)
    code, err = run_main(_argv(ckpt, sst2, out), capsys)
    assert_user_error(code, err, "locked by a run on another machine", "elsewhere", "delete")
    assert snapshot(out) == before


# ----------------------------------------------------------------------------- 3. complete-looking means complete

KILL_AT_RENAME = """
import os, signal, run.safety as s
real = s.place_dir
def place_and_die(tmp, target):
    real(tmp, target)
    os.kill(os.getpid(), signal.SIGKILL)
s.place_dir = place_and_die
"""


def test_kill_9_when_the_model_is_renamed_into_place_then_rerun(ckpt, sst2, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_main(_argv(ckpt, sst2, out, *SAVE), capsys)[0] == 0          # run A: finished
    old_id = _pruned_run_id(out / "pruned_model")
    proc = _start(_argv(ckpt, sst2, out, "--overwrite", "--method", "kwon", *SAVE), KILL_AT_RENAME)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    # run B's model is in place, but no results.json names it: the folder is not finished
    assert not (out / "results.json").exists()
    killed_id = _pruned_run_id(out / "pruned_model")
    assert killed_id not in (None, old_id)
    code, err = run_main(_argv(ckpt, sst2, out, *SAVE), capsys)              # rerun: no --overwrite needed
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert _pruned_run_id(out / "pruned_model") == results["pruned_model"]["run_id"] != killed_id
    assert "took over the stale lock" in (out / "log.txt").read_text()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name or p.suffix == ".pending"]


def test_ctrl_c_before_the_model_is_placed_leaves_no_model(ckpt, sst2, tmp_path, capsys, monkeypatch):
    import run.safety as safety

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(safety, "place_dir", interrupted)
    out = tmp_path / "out"
    code, err = run_main(_argv(ckpt, sst2, out, *SAVE), capsys)
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["args.json", "head_mask.pt", "log.txt", "neuron_mask.pt",
                                                      "versions.json", "weight_updates.pt"]


def test_saved_model_is_readable_by_other_users(ckpt, sst2, tmp_path, capsys):
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert run_main(_argv(ckpt, sst2, out, *SAVE), capsys)[0] == 0
    finally:
        os.umask(old)
    assert (out / "pruned_model").stat().st_mode & 0o777 == 0o755
    assert (out / "pruned_model" / "pruning.json").stat().st_mode & 0o044 == 0o044


# ----------------------------------------------------------------------------- 5. failed writes

def _fail(err_no):
    def fail(*a, **k):
        raise OSError(err_no, os.strerror(err_no), "x")
    return fail


def test_disk_full_while_writing_the_masks(ckpt, sst2, tmp_path, capsys, monkeypatch):
    import prune.masks
    monkeypatch.setattr(prune.masks.torch, "save", _fail(errno.ENOSPC))
    out = tmp_path / "out"
    code, err = run_main(_argv(ckpt, sst2, out, *SAVE), capsys)
    assert_user_error(code, err, "cannot write the masks", "No space left on device", "free some space")
    assert not [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".pt", ".json.pending", "results.json"))
                or ".tmp-" in p.name]
    assert not (out / "run.lock").exists()


def test_read_only_results_json(ckpt, sst2, tmp_path, capsys, monkeypatch):
    import run.folder as run_folder
    real_open = open

    def fake_open(path, *a, **k):
        if str(path).endswith("results.json.pending.tmp"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, *a, **k)
    monkeypatch.setattr(run_folder, "open", fake_open, raising=False)
    out = tmp_path / "out"
    code, err = run_main(_argv(ckpt, sst2, out, *SAVE), capsys)
    assert_user_error(code, err, "cannot write", "results.json", "Read-only file system")
    assert not (out / "results.json").exists() and not (out / "pruned_model").exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name or ".pending" in p.name]


def test_no_space_while_saving_the_pruned_model(ckpt, sst2, tmp_path, capsys, monkeypatch):
    from transformers import PreTrainedModel
    real = PreTrainedModel.save_pretrained

    def half_then_full(self, folder, *a, **k):
        if os.path.basename(folder).startswith("pruned_model.tmp-"):
            (open(os.path.join(folder, "model.safetensors"), "wb")).write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), folder)
        return real(self, folder, *a, **k)
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", half_then_full)
    out = tmp_path / "out"
    code, err = run_main(_argv(ckpt, sst2, out, *SAVE), capsys)
    assert_user_error(code, err, "cannot write the pruned model", "No space left on device")
    assert not (out / "results.json").exists()
    assert not [p for p in out.iterdir() if "pruned_model" in p.name]


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot run mount here")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()[:100]})")
    try:
        yield mount
    finally:
        from run.folder import setup_logging
        setup_logging(None)                        # closes log.txt, which keeps the mount busy
        if subprocess.run(["umount", str(mount)], capture_output=True, timeout=10).returncode:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)


def test_disk_full_on_a_real_tiny_tmpfs(ckpt, sst2, tiny_tmpfs, capsys):
    out = tiny_tmpfs / "out"                      # 2 MB: the run folder fits, the ~5 MB model does not
    code, err = run_main(_argv(ckpt, sst2, out, *SAVE), capsys)
    assert_user_error(code, err, "cannot write", "pruned model")
    assert not (out / "results.json").exists()
    assert not [p for p in out.iterdir() if "pruned_model" in p.name or ".tmp" in p.name]
    assert not (out / "run.lock").exists()


# ----------------------------------------------------------------------------- 6. signals

SECOND_CTRL_C = """
import os, signal, run.safety as s
real = s.discard_dir
def slow_cleanup(tmp):
    os.kill(os.getpid(), signal.SIGINT)           # the second Ctrl-C, during the clean-up
    os.kill(os.getpid(), signal.SIGTERM)
    real(tmp)
s.discard_dir = slow_cleanup
def ctrl_c(*a, **k):
    os.kill(os.getpid(), signal.SIGINT)           # the first Ctrl-C, right before the model is placed
s.place_dir = ctrl_c
"""


def test_second_ctrl_c_during_clean_up_still_exits_130(ckpt, sst2, tmp_path):
    out = tmp_path / "out"
    proc = _start(_argv(ckpt, sst2, out, *SAVE), SECOND_CTRL_C)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1].startswith("interrupted")
    assert not [p for p in out.iterdir() if "pruned_model" in p.name] and not (out / "run.lock").exists()


# ----------------------------------------------------------------------------- pruning.json

def test_edited_pruning_json_names_the_field(ckpt, sst2, tmp_path, capsys):
    from export.hf_load import load_pruned
    from export.hf_folder import PrunedModelError, validate_pruning_info
    out = tmp_path / "out"
    assert run_main(_argv(ckpt, sst2, out, *SAVE), capsys)[0] == 0
    good = json.loads((out / "pruned_model" / "pruning.json").read_text())
    assert validate_pruning_info(dict(good)) == good
    first = next(i for i, k in enumerate(good["kept_heads"]) if len(k) >= 2)

    def edit(**changes):
        return {**good, **changes}
    kept = [list(k) for k in good["kept_heads"]]
    kept[first] = kept[first][::-1]
    cases = [
        (edit(num_layers="3"), "num_layers"),
        (edit(num_heads=True), "num_heads"),
        (edit(heads_per_layer=good["heads_per_layer"][:-1]), "heads_per_layer"),
        (edit(heads_per_layer=[99] * good["num_layers"]), "heads_per_layer"),
        (edit(kept_heads=kept), "kept_heads"),
        (edit(kept_neurons=[[0, 0]] * good["num_layers"]), "kept_neurons"),
        (edit(kept_neurons=[[10_000]] * good["num_layers"]), "kept_neurons"),
        (edit(kept_heads=[list(range(good["num_heads"]))] * good["num_layers"]), "kept_heads"),   # count mismatch
        ({k: v for k, v in good.items() if k != "ffn_dim"}, "ffn_dim"),
        (edit(run_id=5), "run_id"),
        (edit(width_multiple=0), "width_multiple"),
    ]
    if good["heads_per_layer"] == [good["num_heads"]] * good["num_layers"]:
        cases.pop(7)
    model = out / "pruned_model"
    for info, field in cases:
        with pytest.raises(PrunedModelError, match=f"field '{field}'"):
            validate_pruning_info(info)
        (model / "pruning.json").write_text(json.dumps(info))
        with pytest.raises(PrunedModelError, match=f"pruning.json: field '{field}'"):
            load_pruned(str(model))
    (model / "pruning.json").write_text("[1, 2]")
    with pytest.raises(PrunedModelError, match="not a JSON object"):
        load_pruned(str(model))


# ----------------------------------------------------------------------------- 4. every input validated

def _config_edit(tmp_path, ckpt, **changes):
    import shutil
    shutil.copytree(ckpt, tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    config.update(changes)
    (tmp_path / "c" / "config.json").write_text(json.dumps(config))
    return str(tmp_path / "c")


@pytest.mark.parametrize("flags, needles", [
    (["--seed", "-1"], ["argument --seed", "outside 0..4294967295"]),
    (["--seed", str(2**32)], ["argument --seed", "outside 0..4294967295"]),
    (["--device", "meta"], ["--device meta holds no data"]),
    (["--device", "mps"], ["--device mps", "no mps device", "--device cpu"]),
    (["--device", "xpu"], ["--device xpu", "no xpu device"]),
    (["--max_seq_length", "2"], ["--max_seq_length 2 leaves no room for the text", "--max_seq_length 3 or more"]),
    (SAVE + ["--speed_seq_len", "500"][:0] + ["--speed_seq_len", "500"], ["--speed_seq_len 500", "64 or less"]),
], ids=["seed-negative", "seed-2**32", "meta", "mps", "xpu", "max-seq-length", "speed-seq-len"])
def test_bad_arguments(flags, needles, ckpt, sst2, tmp_path, capsys):
    import torch.backends.mps
    if "mps" in flags and torch.backends.mps.is_available() or "xpu" in flags and torch.xpu.is_available():
        pytest.skip("this machine has that device")
    before = snapshot(tmp_path, ckpt, sst2)
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "out", *flags), capsys)
    if needles[0].startswith("argument"):
        assert code == 2 and all(n in err for n in needles), err
    else:
        assert_user_error(code, err, *needles)
    assert not (tmp_path / "out" / "results.json").exists()
    assert {k: v for k, v in snapshot(tmp_path, ckpt, sst2).items() if "/out" not in k} == before


@pytest.mark.parametrize("changes, needles", [
    (dict(num_attention_heads=5), ["config.json", "hidden size 32 is not a multiple of the 5 attention heads",
                                   "the weights are not the problem"]),
    (dict(id2label={"0": "a", "2": "b"}, label2id={"a": 0, "b": 2}), ["config.json", "label maps", "0..1"]),
    (dict(id2label={"0": "a", "1": "b"}, label2id={"a": 0, "b": 0}), ["label2id ids [0, 0]", "permutation"]),
    (dict(vocab_size=50), ["the tokenizer has", "vocabulary (vocab_size in config.json) has 50"]),
], ids=["heads", "id2label", "label2id", "vocab"])
def test_bad_config_json(changes, needles, ckpt, sst2, tmp_path, capsys):
    folder = _config_edit(tmp_path, ckpt, **changes)
    before = snapshot(folder)
    code, err = run_main(_argv(folder, sst2, tmp_path / "out"), capsys)
    assert_user_error(code, err, *needles)
    assert snapshot(folder) == before and not (tmp_path / "out").exists()


def test_bad_latency_tables(ckpt, sst2, tmp_path, capsys):
    good_ffn = tmp_path / "ffn.pt"
    torch.save(torch.linspace(0, 1, 38), good_ffn)
    tables = {"zero.pt": torch.zeros(5), "flat.pt": torch.full((5,), 0.3), "dict.pt": {"lut": [1, 2]},
              "ints.pt": torch.arange(5)}
    for name, table in tables.items():
        torch.save(table, tmp_path / name)
    (tmp_path / "folder.pt").mkdir()
    os.mkfifo(tmp_path / "fifo.pt")
    os.symlink(tmp_path / "loop.pt", tmp_path / "loop.pt")
    cases = [("zero.pt", "is all zero"), ("flat.pt", "is flat"), ("dict.pt", "holds dict, not a 1-D float tensor"),
             ("ints.pt", "torch.int64 tensor"), ("folder.pt", "is a folder, not a file"),
             ("fifo.pt", "is a FIFO, not a regular file"), ("loop.pt", "cannot be read (Too many levels")]
    for i, (name, needle) in enumerate(cases):
        argv = _argv(ckpt, sst2, tmp_path / f"out{i}", "--metric", "latency", "--mha_lut", str(tmp_path / name),
                     "--ffn_lut", str(good_ffn))
        code, err = run_main(argv, capsys)
        assert_user_error(code, err, "--mha_lut", needle)


@pytest.mark.parametrize("train, needles", [
    ("sentence\tlabel\tsentence\n" + "a\t1\tb\n" * 4, ["column(s) ['sentence'] more than once"]),
], ids=["duplicate-header"])
def test_bad_tsv(train, needles, ckpt, tmp_path, capsys):
    data = _glue(tmp_path / "glue", train=train)
    before = snapshot(data)
    code, err = run_main(_argv(ckpt, data, tmp_path / "out"), capsys)
    assert_user_error(code, err, *needles)
    assert snapshot(data) == before


def test_tsv_path_that_is_a_folder_or_fifo(ckpt, tmp_path, capsys):
    data = _glue(tmp_path / "glue", train=None)
    (tmp_path / "glue" / "SST-2" / "train.tsv").mkdir()
    code, err = run_main(_argv(ckpt, data, tmp_path / "out"), capsys)
    assert_user_error(code, err, "train.tsv is a folder, not a file")


def test_fields_longer_than_the_csv_default_limit_load(ckpt, tmp_path, capsys):
    long_text = "great " * (131072 // 6 + 10)          # above the csv module's default field size limit
    data = _glue(tmp_path / "glue", train=GOOD_TRAIN + f"{long_text}\t1\n")
    code, err = run_main(_argv(ckpt, data, tmp_path / "out", "--max_seq_length", "64"), capsys)
    assert code == 0, err


def _squad(examples_json):
    return json.dumps({"version": "1.1", "data": examples_json})


GOOD_QA = {"id": "q1", "question": "what?", "answers": [{"text": "fun", "answer_start": 6}]}


@pytest.mark.parametrize("data, needles", [
    (["not an article"], ["data[0] is a str, not a JSON object"]),
    ([{"title": "t", "paragraphs": "oops"}], ["data[0].paragraphs is a str, not a JSON list"]),
    ([{"title": "t", "paragraphs": [{"context": "great fun", "qas": {"id": "q"}}]}],
     ["data[0].paragraphs[0].qas is a dict, not a JSON list"]),
    ([{"title": "t", "paragraphs": [{"context": "great fun", "qas": [7]}]}], ["qas[0] is a int, not a JSON object"]),
    ([{"title": "t", "paragraphs": [{"context": "great fun", "qas": [{**GOOD_QA, "answers": "fun"}]}]}],
     ["qas[0].answers is a str, not a JSON list"]),
    ([{"title": "t", "paragraphs": [{"context": "\u200b\u200b\u200b", "qas": [
        {"id": "q1", "question": "what?", "answers": [{"text": "\u200b", "answer_start": 0}]}]}]}],
     ["SQuAD example 'q1'", "blank after tokenization"]),
], ids=["article", "paragraphs", "qas", "qa", "answers", "blank-context"])
def test_malformed_squad_structures(data, needles, tokenizer, tmp_path, capsys):
    qa = _save_ckpt(tmp_path / "qa", tokenizer, qa=True)
    folder = tmp_path / "squad"
    folder.mkdir()
    (folder / "train-v1.1.json").write_text(_squad(data))
    (folder / "dev-v1.1.json").write_text(_squad([{"title": "t", "paragraphs": [{"context": "great fun",
                                                                                 "qas": [GOOD_QA]}]}]))
    before = snapshot(folder)
    code, err = run_main(_argv(qa, folder, tmp_path / "out", "--max_seq_length", "32", "--doc_stride", "8",
                               task="squad"), capsys)
    assert_user_error(code, err, *needles)
    assert snapshot(folder) == before


# ----------------------------------------------------------------------------- 7. STS-B

def test_stsb_labels_outside_0_5_and_constant_predictions_are_reported(tokenizer, tmp_path, capsys):
    def constant(model):                       # every input gets the same score
        model.classifier.weight.zero_()
    folder = _save_ckpt(tmp_path / "c", tokenizer, num_labels=1, edit=constant)
    rows = "".join(f"{i}\tg\t0\t0\t{s}\t{s}\t{y}\n" for i, (s, y) in
                   enumerate([("great fun", 4.5), ("a mess", 0.5), ("fine", 7.0), ("ok", 2.0)] * 4))
    header = "index\tgenre\tfilename\tyear\tsentence1\tsentence2\tscore\n"
    data = _glue(tmp_path / "glue", train=header + rows, dev=header + rows, folder="STS-B")
    out = tmp_path / "out"
    code, err = run_main(_argv(folder, data, out, task="stsb"), capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    warnings = results["data"]["warnings"]
    assert any("outside the STS-B range [0, 5]" in w for w in warnings)
    assert any("Pearson and Spearman are undefined" in w for w in warnings)
    assert results["data"]["train"]["labels_outside_0_5"] == 4
    log = (out / "log.txt").read_text()
    assert "outside the STS-B range" in log and "undefined" in log
