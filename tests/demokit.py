"""Helpers for the demo's tests: a tiny CoDE model with fitted heads, a demo app, test images."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from serverkit import make_settings


def fit_demo_heads(model_dir: Path, folders: dict[str, Path], out: Path) -> Path:
    """linear/knn/svm heads and per-generator heads (gen_a, gen_b) on the labelled folders, as `heads fit` does."""
    from deepsift.model.fitting import fit_heads_from_folders

    fit_heads_from_folders([str(folders["real"])], [str(folders["gen_a"]), str(folders["gen_b"])], str(model_dir),
                           str(out), workers=1)
    return out


def demo_settings(database_url: str, data_dir: Path, model_dir: Path, heads_dir: Path, quiz: Path | None = None,
                  **demo: Any):
    """Server settings whose demo runs the tiny model (loopback URLs allowed unless ``demo`` says otherwise)."""
    opts: dict[str, Any] = {"model": str(model_dir), "heads": str(heads_dir), "allow_private_urls": True,
                            "url_timeout": 2.0, "quiz_dataset": str(quiz) if quiz else None}
    opts.update(demo)
    return make_settings(database_url, data_dir, domain_overrides={"demo": opts})


def jpeg_bytes(seed: int = 0, w: int = 300, h: int = 260, quality: int = 92, **save: Any) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality, **save)
    return buf.getvalue()


def png_bytes(seed: int = 0, w: int = 256, h: int = 256, text: dict[str, str] | None = None) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    info = PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _x509_name(cn: str):  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "deepsift tests")])


def _key_usage(sign: bool):  # type: ignore[no-untyped-def]
    from cryptography import x509

    return x509.KeyUsage(digital_signature=not sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=sign, crl_sign=sign,
                         encipher_only=False, decipher_only=False)


def _validity() -> dict[str, Any]:
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    return dict(not_valid_before=now - dt.timedelta(days=1), not_valid_after=now + dt.timedelta(days=30))


def c2pa_test_ca(cn: str = "test CA") -> tuple[Any, Any]:
    """A home-made CA, (certificate, private key): valid X.509, on no trust list."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder(**_validity()).subject_name(_x509_name(cn)).issuer_name(_x509_name(cn))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(_key_usage(True), critical=True).sign(ca_key, hashes.SHA256()))
    return ca, ca_key


def pem(cert: Any) -> bytes:
    """A certificate as PEM (what a trust list file holds)."""
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def c2pa_signed_jpeg(tamper: bool = False, generator: str = "deepsift-test", ai: bool = True,
                     ca: tuple[Any, Any] | None = None, signer_name: str = "test signer") -> bytes:
    """A JPEG with a C2PA manifest signed under ``ca`` (default: a fresh throwaway CA; untrusted, valid)
    claiming ``generator``; ``ai``: it declares trainedAlgorithmicMedia; ``tamper``: pixels changed after."""
    import json

    import c2pa
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert, ca_key = ca or c2pa_test_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder(**_validity()).subject_name(_x509_name(signer_name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    chain = pem(leaf) + pem(ca_cert)
    pkey = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, pkey, None))
    source = "trainedAlgorithmicMedia" if ai else "digitalCapture"
    manifest = {"claim_generator_info": [{"name": generator, "version": "1"}], "title": "signed.jpg",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
                    "action": "c2pa.created",
                    "digitalSourceType": f"http://cv.iptc.org/newscodes/digitalsourcetype/{source}"}]}}]}
    out = io.BytesIO()
    c2pa.Builder(json.dumps(manifest)).sign(signer, "image/jpeg", io.BytesIO(jpeg_bytes(3, 256, 256)), out)
    data = bytearray(out.getvalue())
    if tamper:
        data[-200] ^= 0xFF  # inside the entropy-coded pixels, after the manifest
    return bytes(data)
