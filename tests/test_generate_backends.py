"""Generator specs, seeds and backends (diffusers t2i, AutoencoderKL reconstruction, entry-point plugins)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deepsift.cli import main
from deepsift.exceptions import GeneratorError
from deepsift.generate.backends import create_generator, load_generators
from deepsift.generate.spec import DEFAULT_VAE, derive_seed, parse_spec


def test_parse_spec_types_options():
    s = parse_spec("sd14=t2i:/models/sd,steps=4,width=64,height=48,guidance=7.5,negative=blurry,batch=2")
    assert (s.name, s.kind, s.source) == ("sd14", "t2i", "/models/sd")
    assert s.options == {"steps": 4, "width": 64, "height": 48, "guidance": 7.5, "negative": "blurry", "batch": 2}
    assert parse_spec("v=vae:").source == DEFAULT_VAE
    assert parse_spec("p=plugin:mine,anything=x").options == {"anything": "x"}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("nokind", "expected NAME=KIND:SOURCE"),
        ("a b=t2i:x", "expected NAME=KIND:SOURCE"),
        ("x=img2img:foo", "unknown kind 'img2img'"),
        ("x=t2i:", "SOURCE is empty"),
        ("x=t2i:/m,steps=zero", "steps='zero' must be a positive integer"),
        ("x=t2i:/m,steps=-1", "must be a positive integer"),
        ("x=t2i:/m,guidance=high", "guidance='high' must be a number"),
        ("x=t2i:/m,colour=red", "unknown option 'colour'"),
        ("x=t2i:/m,steps", "is not key=value"),
    ],
)
def test_parse_spec_errors(text, fragment):
    with pytest.raises(GeneratorError, match=None) as err:
        parse_spec(text)
    assert fragment in str(err.value)


def test_derive_seed_is_stable_and_distinct():
    a = derive_seed("rec-1", "sd14")
    assert a == derive_seed("rec-1", "sd14")
    assert 0 <= a < 2**63
    others = {derive_seed("rec-1", "sd21"), derive_seed("rec-2", "sd14"), derive_seed("rec-1sd", "14")}
    assert a not in others and len(others) == 3


def test_t2i_loads_by_path_and_is_deterministic(models):
    [gen] = load_generators([parse_spec(f"sd=t2i:{models.sd},steps=2,width=64,height=64,batch=2")])
    assert gen.model == str(models.sd) and gen.steps == 2 and not gen.needs_real_image
    a = gen.generate(["a cat", "a dog"], [None, "blurry"], [1, 2])
    b = gen.generate(["a cat"], [None], [1])
    c = gen.generate(["a cat"], [None], [3])
    assert [im.size for im in a] == [(64, 64), (64, 64)]
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))  # same seed, batch or not: same pixels
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))
    # nor do the neighbours, their order, or how many prompts a call holds change a pixel
    cat = np.asarray(b[0])
    for prompts, negs, seeds, at in ((["a dog", "a cat"], ["blurry", None], [2, 1], 1),
                                     (["a bird", "a cat", "a fish"], [None, None, None], [7, 1, 9], 1),
                                     (["x", "y", "z", "a cat"], [None, None, None, None], [4, 5, 6, 1], 3)):
        assert np.array_equal(np.asarray(gen.generate(prompts, negs, seeds)[at]), cat), prompts
    assert gen.prompt_too_long("word " * 100) and not gen.prompt_too_long("a cat")


def test_vae_reconstruction_round_trip(models):
    [gen] = load_generators([parse_spec(f"v=vae:{models.vae}")])
    [sized] = load_generators([parse_spec(f"v2=vae:{models.sd},width=32,height=32")])  # pipeline dir -> vae/
    real = Image.fromarray(np.random.RandomState(0).randint(0, 255, (37, 50, 3), dtype=np.uint8))
    a = gen.generate([""], [None], [5], [real])[0]
    assert a.size == (50, 36)  # cropped to a multiple of the downsampling factor (2 here)
    assert np.array_equal(np.asarray(a), np.asarray(gen.generate([""], [None], [5], [real])[0]))
    assert not np.array_equal(np.asarray(a), np.asarray(gen.generate([""], [None], [6], [real])[0]))
    assert sized.generate([""], [None], [5], [real])[0].size == (32, 32)
    with pytest.raises(GeneratorError, match="needs one real image"):
        gen.generate(["x"], [None], [1], None)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("m=t2i:/nonexistent/model", "no such model directory"),
        ("m=t2i:nobody/not-a-cached-model", "does not load"),
        ("m=vae:./missing-vae", "no such model directory"),
        ("m=plugin:no_such_plugin", "no generator plugin 'no_such_plugin'"),
    ],
)
def test_spec_that_does_not_load(spec, fragment):
    with pytest.raises(GeneratorError) as err:
        load_generators([parse_spec(spec)])
    assert fragment in str(err.value)


def test_not_a_text_to_image_source(models, tmp_path):
    with pytest.raises(GeneratorError, match="does not load"):
        load_generators([parse_spec(f"m=t2i:{models.tokenizer}")])  # a folder, but no pipeline in it


def test_duplicate_generator_names(models):
    with pytest.raises(GeneratorError, match="used twice: a"):
        load_generators([parse_spec(f"a=vae:{models.vae}"), parse_spec(f"a=vae:{models.vae}")])


def test_plugin_through_entry_point(plugin_dist, tmp_path):
    gen = create_generator(parse_spec("flat=plugin:solid,size=8"))
    gen.load()
    assert gen.model == "solid-colour-v1"
    [im] = gen.generate(["abc"], [None], [300])
    assert im.size == (8, 8) and im.getpixel((0, 0)) == (300 % 256, 3, 7)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"r{i}", "prompt": "x" * i}) + "\n" for i in range(1, 5)))
    assert main(["data", "build", "--prompts", str(prompts), "-g", "flat=plugin:solid,size=8", "--out", str(tmp_path / "o")]) == 0
    from deepsift.data.reader import read_d3

    recs = list(read_d3(tmp_path / "o"))
    assert [r.id for r in recs] == ["r1", "r2", "r3", "r4"]
    for r in recs:
        [g] = r.generations
        assert g.model == "solid-colour-v1" and (g.width, g.height) == (8, 8)
        assert g.decode().getpixel((0, 0)) == (derive_seed(r.id, "flat") % 256, len(r.original_prompt), 7)


def test_plugin_errors(plugin_dist):
    with pytest.raises(GeneratorError, match="does not import"):
        create_generator(parse_spec("b=plugin:broken"))
    with pytest.raises(GeneratorError, match=r"rejected .*unexpected keyword"):
        create_generator(parse_spec("b=plugin:solid,colour=red"))
    with pytest.raises(GeneratorError, match=r"installed: .*solid"):
        create_generator(parse_spec("b=plugin:nope"))


def test_cli_help_documents_spec_syntax(capsys):
    assert main(["data", "build", "--help"]) == 0
    out = capsys.readouterr().out
    assert "NAME=KIND:SOURCE[,key=value...]" in out and "deepsift.generators" in out and "steps" in out
