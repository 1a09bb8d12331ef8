"""Signatures of anchors, in the SSH signature format, made and checked by OpenSSH's `ssh-keygen -Y`.

An anchor (`check --ledgers --save-anchor`) is only as good as the place it is kept: whoever can
write the data directory can rewrite a ledger and an anchor kept beside it. A signature moves the
authority outside: `--sign-key KEY` signs the anchor file's exact bytes with an OpenSSH key
(namespace `bonuscli-anchor`, to `FILE.sig`), and `--allowed-signers SIGNERS` accepts an anchor
only with a valid signature by a key listed there, as git does for signed commits.

Why `ssh-keygen`: it is there wherever ssh is, operators already have the keys and know the
allowed-signers format, and bonuscli implements no signature algorithm of its own. It is run with
no shell, no standard input but the bytes to verify, and a time limit.
Imports model only.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bonuscli.model import FilesError

NAMESPACE = "bonuscli-anchor"
TIMEOUT = 30  # seconds an ssh-keygen run may take


def _keygen(kind: str) -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        raise FilesError("OpenSSH's ssh-keygen was not found on PATH: it signs and verifies anchors "
                         "(install openssh-client)", kind)
    return path


def _run(args: list, kind: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, input=data if data is not None else b"", capture_output=True,
                              timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FilesError(f"ssh-keygen could not run ({type(e).__name__}: {e})", kind) from None


def _said(p: subprocess.CompletedProcess) -> str:
    text = (p.stderr or p.stdout or b"").decode("utf-8", "replace").strip().splitlines()
    return text[-1] if text else f"exit {p.returncode}"


def sign(path: Path, key: Path) -> Path:
    """Sign the file at `path` with the private key `key`: the signature at `path` + `.sig`."""
    kind = "anchor-sign-failed"
    sig = Path(str(path) + ".sig")
    try:
        sig.unlink()  # ssh-keygen will not overwrite a signature
    except FileNotFoundError:
        pass
    except OSError as e:
        raise FilesError(f"cannot replace {sig}: {e.strerror or e}", kind) from None
    p = _run([_keygen(kind), "-Y", "sign", "-f", str(key), "-n", NAMESPACE, str(path)], kind)
    if p.returncode != 0 or not sig.is_file():
        raise FilesError(f"could not sign {path} with {key}: {_said(p)}", kind)
    return sig


def verify(data: bytes, sig: Path, signers: Path, name: str) -> str:
    """The principal whose key signed `data` (an anchor's exact bytes) with the signature `sig`, as
    `ssh-keygen -Y verify` checks it against the allowed-signers file `signers`. FilesError
    (`anchor-signature`) when the signature is missing, invalid, or by a key not listed."""
    kind = "anchor-signature"
    if not sig.is_file():
        raise FilesError(f"{name}: no signature {sig} (sign anchors with --save-anchor FILE --sign-key KEY)", kind)
    if not Path(signers).is_file():
        raise FilesError(f"no allowed-signers file {signers}", kind)
    keygen = _keygen(kind)
    found = _run([keygen, "-Y", "find-principals", "-s", str(sig), "-f", str(signers)], kind)
    principals = [x.strip() for x in found.stdout.decode("utf-8", "replace").splitlines() if x.strip()]
    if found.returncode != 0 or not principals:
        raise FilesError(f"{name}: its signature {sig} is not by a key listed in {signers} ({_said(found)})", kind)
    for principal in principals:
        p = _run([keygen, "-Y", "verify", "-f", str(signers), "-I", principal, "-n", NAMESPACE, "-s", str(sig)],
                 kind, data)
        if p.returncode == 0:
            return principal
    raise FilesError(f"{name}: its signature {sig} does not verify: the anchor was changed after it was signed, "
                     f"or the signature is not for it ({_said(p)})", kind)
