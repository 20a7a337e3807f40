"""The ``ffdv`` Jupyter kernel: ipykernel started with CurveZMQ transport encryption, for papermill run by hand.

ipykernel logs "Kernel is running over TCP without encryption" at start-up whenever its sockets use TCP without
CurveZMQ keys, which is what a kernel manager gives it unless configured otherwise (``KernelManager
.transport_encryption``, "disabled" by default). The runner configures its own kernel managers
(``core.runner.kernel_config``); ``papermill`` started by hand builds one with no configuration at all. The kernel
spec is the one thing papermill's command line chooses (``-k``), and jupyter_client lets a kernel spec name its kernel
provisioner (the documented extension point, entry point group ``jupyter_client.kernel_provisioners``): the ``ffdv``
spec names ``EncryptedProvisioner``, a ``LocalProvisioner`` that asks for encryption ("auto") when the caller set no
policy and libzmq has CURVE. ``python -m ffdv_utils kernel`` (run by ``make install``) writes the spec into this
environment; then ``papermill IN.ipynb OUT.ipynb -k ffdv`` starts an encrypted kernel and the notice does not arise.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner

KERNEL_NAME = "ffdv"
PROVISIONER_NAME = "ffdv-encrypted"  # the entry point's name in pyproject.toml


def curve_available() -> bool:
    """Does this pyzmq's libzmq support CURVE (the keys the encrypted transport needs)?"""
    try:
        import zmq

        return bool(zmq.has("curve"))
    except Exception:  # an odd pyzmq build: no encryption, the kernel still starts
        return False


class EncryptedProvisioner(LocalProvisioner):  # type: ignore[misc]
    """A local kernel whose manager provisions CurveZMQ keys (policy "auto") unless the caller chose a policy."""

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        km = self.parent
        chosen = getattr(km, "transport_encryption", "disabled") if km is not None else "disabled"
        if "transport_encryption" not in kwargs and chosen == "disabled" and curve_available():
            kwargs["transport_encryption"] = "auto"
        return await super().pre_launch(**kwargs)


def kernel_spec() -> dict[str, Any]:
    """The ``kernel.json`` of the ``ffdv`` kernel: this environment's Python running ipykernel."""
    return {"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ffdv, encrypted transport)", "language": "python",
            "metadata": {"debugger": True, "supported_encryption": ["curve"],
                         "kernel_provisioner": {"provisioner_name": PROVISIONER_NAME, "config": {}}},
            "kernel_protocol_version": "5.5"}


def install_kernel(prefix: str | os.PathLike | None = None) -> Path:
    """Write the ``ffdv`` kernel spec under ``<prefix>/share/jupyter/kernels/ffdv/`` (default: this environment,
    ``sys.prefix``: where jupyter and papermill of this environment look). Returns the spec's folder."""
    folder = Path(prefix or sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps(kernel_spec(), indent=1) + "\n", encoding="utf-8")
    return folder
