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


def c2pa_signed_jpeg(tamper: bool = False) -> bytes:
    """A JPEG with a C2PA manifest signed by a throwaway test CA (untrusted, valid); ``tamper``: pixels changed after."""
    import datetime as dt
    import json

    import c2pa
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "deepsift tests")])

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=not sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=sign, crl_sign=sign,
                             encipher_only=False, decipher_only=False)

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    valid = dict(not_valid_before=now - dt.timedelta(days=1), not_valid_after=now + dt.timedelta(days=30))
    ca = (x509.CertificateBuilder(**valid).subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage(True), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder(**valid).subject_name(name("test signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    pkey = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, pkey, None))
    manifest = {"claim_generator_info": [{"name": "deepsift-test", "version": "1"}], "title": "signed.jpg",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
                    "action": "c2pa.created",
                    "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"}]}}]}
    out = io.BytesIO()
    c2pa.Builder(json.dumps(manifest)).sign(signer, "image/jpeg", io.BytesIO(jpeg_bytes(3, 256, 256)), out)
    data = bytearray(out.getvalue())
    if tamper:
        data[-200] ^= 0xFF  # inside the entropy-coded pixels, after the manifest
    return bytes(data)
