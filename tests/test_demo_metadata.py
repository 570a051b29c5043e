"""C2PA trust: a valid signature from a home-made CA is "signed, signer not verified"; only a configured
trust list makes a signer trusted (issue 18 item 7)."""
from __future__ import annotations

import pytest

from deepsift.demo.metadata import c2pa_manifest
from deepsift.demo.settings import DemoSettings
from demokit import c2pa_signed_jpeg, c2pa_test_ca, pem


@pytest.fixture(scope="module")
def leica_forgery():
    """A manifest claiming "Leica Camera AG M11", signed under a CA made here, and that CA."""
    ca = c2pa_test_ca("Leica Camera AG Root")
    return c2pa_signed_jpeg(generator="Leica Camera AG M11", ai=False, ca=ca, signer_name="Leica Camera AG"), ca


def test_a_home_made_ca_is_valid_but_not_trusted(leica_forgery):
    data, _ = leica_forgery
    c = c2pa_manifest(data, "image/jpeg")
    assert c["present"] and c["valid"] is True and c["trusted"] is False
    assert c["claim_generator"] == "Leica Camera AG M11" and c["declares_ai"] is False
    assert c["signer"].startswith("Leica Camera AG")  # what the certificate claims, shown as a claim


def test_only_a_trust_list_holding_the_root_makes_the_signer_trusted(leica_forgery, tmp_path):
    data, ca = leica_forgery
    listed, other = tmp_path / "trust.pem", tmp_path / "other.pem"
    listed.write_bytes(pem(c2pa_test_ca("someone else")[0]) + pem(ca[0]))
    other.write_bytes(pem(c2pa_test_ca("someone else")[0]))
    assert c2pa_manifest(data, "image/jpeg", str(listed))["trusted"] is True
    assert c2pa_manifest(data, "image/jpeg", str(other)) | {"trusted": None} == \
        c2pa_manifest(data, "image/jpeg") | {"trusted": None}
    assert c2pa_manifest(data, "image/jpeg", str(other))["trusted"] is False
    tampered = c2pa_manifest(c2pa_signed_jpeg(tamper=True, ca=ca), "image/jpeg", str(listed))
    assert tampered["valid"] is False and tampered["trusted"] is False


def test_the_trust_list_setting_is_checked_at_start(tmp_path):
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="no PEM certificate"):
        DemoSettings(c2pa_trust_list=str(tmp_path / "empty.pem"))
    with pytest.raises(ValueError, match="cannot be read"):
        DemoSettings(c2pa_trust_list=str(tmp_path / "missing.pem"))
    assert DemoSettings().c2pa_trust_list is None


@pytest.mark.parametrize("raw, shown", [
    ("stabilityai/stable-diffusion-xl-base-1.0", "Stable Diffusion XL"),
    ("CompVis/stable-diffusion-v1-4", "Stable Diffusion 1.4"),
    ("stabilityai/stable-diffusion-2-1-base", "Stable Diffusion 2.1"),
    ("DeepFloyd/IF-I-M-v1.0", "DeepFloyd IF"),
    ("sdxl", "Stable Diffusion XL"),
    ("gen_0", "gen 0"),
    ("real", "real photos"),
])
def test_generators_are_shown_by_name(raw, shown):
    from deepsift.demo.names import display_name

    assert display_name(raw) == shown
    assert display_name(raw, {raw: "Operator's name"}) == "Operator's name"  # the operator's mapping wins
