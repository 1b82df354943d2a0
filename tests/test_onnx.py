"""ONNX export (``brainseg_lib.model.onnx``) and ``predict --runtime onnx`` (onnxruntime)."""
from __future__ import annotations

import argparse
import hashlib
import sys

import numpy as np
import pytest
import torch
from conftest import has_module, scan_image, tiny_checkpoint_state
from PIL import Image

from brainseg_lib import paths
from brainseg_lib.apply import onnx_runtime
from brainseg_lib.apply import predict as predict_predict
from brainseg_lib.apply.scans import PredictError
from brainseg_lib.inference import predict_probabilities
from brainseg_lib.model import onnx as model_onnx
from brainseg_lib.model.checkpoint import (
    CheckpointError,
    model_from_checkpoint,
    save_checkpoint,
)
from brainseg_lib.model.released import checksum_path, load_released, verify_checksum

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

torch.set_num_threads(1)
# the tiny checkpoints here have no .sha256; the warning itself is tested below
pytestmark = pytest.mark.filterwarnings("ignore:.*integrity was NOT verified")
SIZE = 32
TOL = 1e-4


def tiny_state(seed: int = 0) -> dict:
    """The shared tiny checkpoint (conftest.tiny_checkpoint_state) at this module's size."""
    return tiny_checkpoint_state(SIZE, seed, input_norm="zscore")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(tiny.pt, tiny.onnx exported beside it, the torch model) - exported once for the module."""
    folder = tmp_path_factory.mktemp("onnx_models")
    ckpt = save_checkpoint(tiny_state(), folder / "tiny.pt")
    out = model_onnx.export_onnx(ckpt)
    return ckpt, out, model_from_checkpoint(tiny_state())


def torch_outputs(model, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        logits = model.eval()(x)
    return torch.sigmoid(logits).numpy(), logits.numpy()


# ----------------------------------------------------------------------------- the export
def test_export_writes_onnx_and_checksum_beside_the_checkpoint(exported):
    ckpt, out, _ = exported
    assert out == ckpt.with_suffix(".onnx") and out.is_file()
    data = out.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert checksum_path(out).read_text() == f"{digest}  tiny.onnx\n"        # sha256sum format
    assert verify_checksum(out) == digest
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    assert not proto.graph.initializer[0].data_location            # weights embedded, no external data
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)   # fp32
    assert str(ckpt.parent).encode() not in data and b"/site-packages/" not in data   # no local paths


def test_metadata_documents_the_contract(exported):
    ckpt, out, _ = exported
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["image_size"] == str(SIZE) and meta["input_range"] == "[0, 1]"
    assert meta["threshold"] == "0.5" and meta["input_norm"].startswith("zscore")
    assert meta["source_checkpoint"] == "tiny.pt"
    assert meta["source_checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert "probability" in meta["outputs"] and meta["weights_dtype"] == "float32"
    expected = "dynamo=True" if has_module("onnxscript") else "TorchScript"
    assert expected in meta["exporter"]


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_axis_matches_pytorch(exported, batch):
    _, out, model = exported
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "image" and inp.type == "tensor(float)"
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [1, SIZE, SIZE]
    assert [o.name for o in sess.get_outputs()] == ["probability", "logits"]
    u8 = torch.randint(0, 256, (batch, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(batch),
                       dtype=torch.uint8)
    x = u8.float() / 255
    prob, logits = sess.run(None, {"image": x.numpy()})
    ref_prob, ref_logits = torch_outputs(model, x)
    assert prob.shape == logits.shape == (batch, 1, SIZE, SIZE)
    assert np.abs(prob - ref_prob).max() <= TOL
    assert np.abs(logits - ref_logits).max() <= 1e-3
    assert 0.05 < (prob >= 0.5).mean() < 0.95                    # a non-trivial test


def test_export_is_reproducible_and_refuses_to_overwrite_its_source(exported, tmp_path):
    ckpt, out, _ = exported
    again = model_onnx.export_onnx(ckpt, tmp_path / "again.onnx")
    assert again.read_bytes() == out.read_bytes()               # same weights, same bytes
    with pytest.raises(model_onnx.OnnxExportError, match="overwrite"):
        model_onnx.export_onnx(ckpt, ckpt)


def test_torchscript_exporter_without_onnxscript(exported, tmp_path, monkeypatch):
    """Without onnxscript, ``auto`` falls back to the TorchScript exporter, same outputs."""
    ckpt, _, model = exported
    monkeypatch.setitem(sys.modules, "onnxscript", None)        # import onnxscript -> ImportError
    out = model_onnx.export_onnx(ckpt, tmp_path / "ts.onnx")
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "TorchScript" in meta["exporter"]
    with pytest.raises(model_onnx.OnnxExportError, match="onnxscript"):
        model_onnx.export_onnx(ckpt, tmp_path / "d.onnx", exporter="dynamo")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 1, SIZE, SIZE)
    assert np.abs(sess.run(["probability"], {"image": x.numpy()})[0] - torch_outputs(model, x)[0]).max() <= TOL


def test_released_model_exports_next_to_it(tmp_path, monkeypatch):
    """The default source is the released model (checksum verified), the default target
    results/models/brainseg-cpu.onnx; a tampered release is refused."""
    from brainseg_lib.model.released import release_model
    src = save_checkpoint(tiny_state(), tmp_path / "run" / "best.pt")
    released = release_model(src)                                 # fp16 weights + .sha256
    assert released == paths.released_model()
    out = model_onnx.export_onnx()
    assert out == model_onnx.released_onnx() == paths.models_dir() / "brainseg-cpu.onnx"
    # fp16 weights come back as fp32: the export matches the released model as predict runs it
    model = model_from_checkpoint(load_released())
    x = torch.rand(2, 1, SIZE, SIZE)
    prob = ort.InferenceSession(str(out)).run(["probability"], {"image": x.numpy()})[0]
    assert np.abs(prob - torch_outputs(model, x)[0]).max() <= TOL
    released.write_bytes(released.read_bytes() + b"x")
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        model_onnx.export_onnx()


def test_export_command_handler(tmp_path, exported, capsys):
    ckpt, _, _ = exported
    parser = argparse.ArgumentParser()
    model_onnx.add_export_parser(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(["export", "--format", "onnx", "--checkpoint", str(ckpt),
                              "--output", str(tmp_path / "cli.onnx")])
    assert args.fn(args) == 0
    assert (tmp_path / "cli.onnx").is_file() and (tmp_path / "cli.onnx.sha256").is_file()
    assert "cli.onnx" in capsys.readouterr().out
    args = parser.parse_args(["export", "--checkpoint", str(tmp_path / "missing.pt")])
    assert args.fn(args) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--format", "tflite"])


# ----------------------------------------------------------------------------- predict --runtime onnx
def write_scans(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate([(37, 53), (64, 21), (32, 32), (120, 90)]):
        Image.fromarray(scan_image(h, w, seed=10 + i)).save(folder / f"s{i}.png")
    return folder


def test_predict_onnx_gives_the_same_masks_as_torch(tmp_path, exported):
    ckpt, out, _ = exported
    scans = write_scans(tmp_path / "scans")
    ref = predict_predict.run_predict(scans, tmp_path / "torch", checkpoint=ckpt, device="cpu",
                                      overlay=True, progress=False)
    predictor = predict_predict.load_predictor(ckpt, "cpu")
    for runtime_ckpt in (ckpt, out):                               # the .pt (export beside it) or the .onnx
        dest = tmp_path / f"onnx_{runtime_ckpt.suffix[1:]}"
        run = predict_predict.run_predict(scans, dest, checkpoint=runtime_ckpt, device="cpu",
                                          overlay=True, progress=False, runtime="onnx")
        assert run.n_ok == 4 and run.model == out
        for r_t, r_o in zip(ref.rows, run.rows):
            assert abs(float(r_t["max_prob"]) - float(r_o["max_prob"])) <= TOL
            name = r_t["file"].replace(".png", "_mask.png")
            m_t = np.asarray(Image.open(tmp_path / "torch" / name)) > 0
            m_o = np.asarray(Image.open(dest / name)) > 0
            img = np.asarray(Image.open(scans / r_t["file"]))
            prob = predictor.probabilities(img)
            # masks agree except, at most, pixels whose probability is at the threshold itself
            assert np.all(np.abs(prob[m_t != m_o] - 0.5) < 1e-5), r_t["file"]
            assert (m_t != m_o).mean() < 1e-3 and 0 < m_t.mean() < 1
    assert (tmp_path / "onnx_onnx" / "s0_overlay.png").is_file()


def test_onnx_predictor_probabilities_match_the_torch_predictor(exported):
    ckpt, out, _ = exported
    t = predict_predict.load_predictor(ckpt, "cpu")
    o = onnx_runtime.load_onnx_model(out, threads=1)
    assert o.image_size == t.image_size == SIZE
    img = scan_image(70, 45, seed=3)
    assert np.abs(o.probabilities(img) - t.probabilities(img)).max() <= TOL
    assert o.probabilities(img, (10, 12)).shape == (10, 12)


def test_predict_onnx_refuses_cleanly(tmp_path, exported, monkeypatch):
    _, out, _ = exported
    scans = write_scans(tmp_path / "scans")
    dest = tmp_path / "out"
    with pytest.raises(PredictError, match=r"python -m brainseg_lib export --format onnx"):
        predict_predict.run_predict(scans, dest, runtime="onnx")            # no released export
    lone = save_checkpoint(tiny_state(1), tmp_path / "lone.pt")
    with pytest.raises(PredictError, match=r"export --format onnx --checkpoint .*lone\.pt"):
        predict_predict.run_predict(scans, dest, checkpoint=lone, runtime="onnx")
    with pytest.raises(PredictError, match="CPU"):
        predict_predict.run_predict(scans, dest, checkpoint=out, runtime="onnx", device="cuda")
    with pytest.raises(PredictError, match="unknown runtime"):
        predict_predict.run_predict(scans, dest, checkpoint=out, runtime="tensorrt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(PredictError, match="pip install onnxruntime"):
        predict_predict.run_predict(scans, dest, checkpoint=out, runtime="onnx")
    assert not dest.exists()                                               # nothing written


def test_predict_onnx_checks_integrity_and_staleness(tmp_path, exported):
    _, out, _ = exported
    folder = tmp_path / "m"
    folder.mkdir()
    onnx_file = folder / "tiny.onnx"
    onnx_file.write_bytes(out.read_bytes())
    scans = write_scans(tmp_path / "scans")
    with pytest.warns(predict_predict.UnverifiedCheckpoint, match="NOT"):   # no .sha256 beside it
        predict_predict.load_onnx_predictor(onnx_file, "cpu")
    checksum_path(onnx_file).write_text(checksum_path(out).read_text())
    predict_predict.load_onnx_predictor(onnx_file, "cpu")                   # verified, no warning
    # the .pt beside it was re-released after the export: refuse the stale export
    checksum_path(folder / "tiny.pt").write_text(f"{'0' * 64}  tiny.pt\n")
    with pytest.raises(PredictError, match="older tiny.pt"):
        predict_predict.load_onnx_predictor(onnx_file, "cpu")
    checksum_path(folder / "tiny.pt").unlink()
    onnx_file.write_bytes(out.read_bytes()[:-10] + b"0123456789")         # tampered
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        predict_predict.run_predict(scans, tmp_path / "o", checkpoint=onnx_file, runtime="onnx")
    junk = folder / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(PredictError, match="cannot load the ONNX model"):
        onnx_runtime.load_onnx_model(junk)


def test_non_brainseg_onnx_is_refused(tmp_path):
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "other.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                       ir_version=8).SerializeToString())
    with pytest.raises(PredictError, match="not a brainseg export"):
        onnx_runtime.load_onnx_model(path)


def fake_export(path, node_type: str, size: int = SIZE, **attrs):
    """An ONNX file that passes the brainseg checks of inputs, outputs and metadata but whose
    ``probability`` is ``node_type`` of the image (MaxPool: smaller; Div by 0: NaN/inf)."""
    from onnx import TensorProto, helper, numpy_helper
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size])
    y = helper.make_tensor_value_info("probability", TensorProto.FLOAT, None)
    inits = []
    if node_type == "Div":
        inits = [numpy_helper.from_array(np.zeros((1,), np.float32), "zero")]
        node = helper.make_node("Div", ["image", "zero"], ["probability"])
    else:
        node = helper.make_node(node_type, ["image"], ["probability"], **attrs)
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    helper.set_model_props(model, {"image_size": str(size)})
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_wrong_output_shape_refused(tmp_path, capsys):
    """An export whose output is 8x8 for a 32x32 input is refused at load, in one line."""
    bad = fake_export(tmp_path / "small.onnx", "MaxPool", kernel_shape=[4, 4], strides=[4, 4])
    with pytest.raises(PredictError, match=r"shape \(1, 1, 8, 8\) where \(1, 1, 32, 32\) was expected"):
        onnx_runtime.load_onnx_model(bad)
    scans = write_scans(tmp_path / "scans")
    from brainseg_lib import cli
    assert cli.main(["predict", "--runtime", "onnx", "--checkpoint", str(bad), "--input", str(scans),
                     "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if not line.startswith("WARNING")][0].startswith("error: refusing the model")
    assert not (tmp_path / "o").exists()


def test_onnx_nan_output_refused(tmp_path):
    bad = fake_export(tmp_path / "nan.onnx", "Div")
    with pytest.raises(PredictError, match="NaN or infinite"):
        onnx_runtime.load_onnx_model(bad)


# ----------------------------------------------------------------------------- the real model, real scans
@pytest.mark.realdata
def test_released_onnx_agrees_with_pytorch_on_real_test_images(real_root, tmp_path):
    """The committed ONNX export of the released model (exported here to tmp_path if absent)
    gives the PyTorch probabilities on the 100 TEST images within 1e-4."""
    from brainseg_lib.data.cache import load_split
    pt = paths.PROJECT_ROOT / "results" / "models" / "brainseg-cpu.pt"
    if not pt.is_file():
        pytest.skip(f"no released model at {pt}")
    committed = model_onnx.onnx_path_for(pt)
    onnx_file = committed if committed.is_file() else model_onnx.export_onnx(pt, tmp_path / committed.name)
    # the export is not committed, its checksum is: the export made here is the study's, byte for byte
    assert verify_checksum(onnx_file) == checksum_path(committed).read_text().split()[0]
    ck = load_released(pt)
    size = ck["train_config"]["image_size"]
    arrays = load_split("test", size, root=real_root, progress=False)
    assert len(arrays) == 100
    ref = predict_probabilities(model_from_checkpoint(ck, pt), arrays.images, torch.device("cpu"),
                                batch_size=20)
    predictor = onnx_runtime.load_onnx_model(onnx_file)
    assert predictor.metadata["source_checkpoint_sha256"] == hashlib.sha256(pt.read_bytes()).hexdigest()
    got = np.concatenate([predictor.batch_probabilities(arrays.images[i:i + 20]) for i in range(0, 100, 20)])
    diff = float(np.abs(got - ref).max())
    flips = int(((got >= 0.5) != (ref >= 0.5)).sum())
    print(f"\n{onnx_file.name}: max |p_onnx - p_torch| = {diff:.3g} over {ref.size} pixels; "
          f"{flips} mask pixels differ at 0.5")
    assert diff <= TOL


def test_run_all_writes_the_released_onnx_only_where_it_is_missing(tmp_path):
    """The ONNX export is not committed (derived from the .pt): run_all exports it beside the
    released model when absent, and leaves an existing export and a folder without a model alone."""
    from brainseg_lib.model.released import release_model
    from brainseg_lib.study.run_all import export_missing_onnx
    released = release_model(save_checkpoint(tiny_state(), tmp_path / "run" / "best.pt"))
    onnx_file = model_onnx.onnx_path_for(released)
    assert not onnx_file.exists()
    assert export_missing_onnx(released.parent) == onnx_file and onnx_file.is_file()
    verify_checksum(onnx_file)
    before = onnx_file.stat().st_mtime_ns
    assert export_missing_onnx(released.parent) is None and onnx_file.stat().st_mtime_ns == before
    assert export_missing_onnx(tmp_path / "empty") is None
