"""publish(): the dry-run folder, the upload through huggingface_hub's own client, failures, tokens.

No network: huggingface_hub's HTTP client is routed to the in-process FakeHub (tests/hub_http.py).
"""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from diffusers_smd import cli
from diffusers_smd.hub import DEFAULT_IGNORE_PATTERNS, PublishError, check_repo_id, publish
from tests.hub_cache import build_hub_cache
from tests.hub_http import fake_hub, make_run_folder, snapshot_tree

FAKE_TOKEN = "hf_FakeTokenForTests0123456789abcdef"

# What a run folder holds that must stay local (see make_run_folder).
LOCAL_ONLY = {
    "checkpoint-10/optimizer.bin",
    "checkpoint-10/unet/config.json",
    ".tmp-checkpoint-20/random_states_0.pkl",
    "logs/events.out.tfevents.1",
}


@pytest.fixture
def run_folder(tmp_path):
    return make_run_folder(tmp_path / "run")


@pytest.fixture
def env_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return FAKE_TOKEN


def test_dry_run_writes_the_upload_folder_and_leaves_the_run_untouched(run_folder, tmp_path):
    before = snapshot_tree(run_folder)
    result = publish(run_folder, "me/smd-digits", dry_run_dir=tmp_path / "dry")
    assert snapshot_tree(run_folder) == before  # nothing added, changed or removed in the user's folder

    staged = snapshot_tree(tmp_path / "dry")
    assert tuple(sorted(staged)) == result.files
    assert result.dry_run_dir == tmp_path / "dry" and result.commit_url is None
    copied = set(before) - LOCAL_ONLY
    added = set(staged) - copied
    assert not (LOCAL_ONLY & set(staged)), "checkpoints or logs would be uploaded"
    assert copied <= set(staged)
    assert "README.md" in added
    for name in copied - {"model_index.json"}:  # model_index.json gains the shim entries for SMD pipelines
        assert staged[name] == before[name], name
    ModelCard.load(tmp_path / "dry" / "README.md")  # the card's metadata parses


def test_dry_run_refuses_a_non_empty_folder(run_folder, tmp_path):
    target = tmp_path / "dry"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="dry_run_dir"):
        publish(run_folder, "me/smd-digits", dry_run_dir=target)
    assert snapshot_tree(target) == {"keep.txt": b"mine"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"repo_id": "no-namespace"}, ValueError, "namespace/name"),
        ({"repo_id": "me/bad name!"}, ValueError, "repo_id"),
        ({"private": "yes"}, TypeError, "private"),
        ({"commit_message": "  "}, ValueError, "commit_message"),
        ({"ignore_patterns": "checkpoint-*"}, TypeError, "ignore_patterns"),
        ({"license": ""}, ValueError, "license"),
    ],
)
def test_bad_arguments_fail_before_any_work(run_folder, tmp_path, kwargs, error, match):
    arguments = {"repo_id": "me/smd-digits", **kwargs}
    with fake_hub() as hub, pytest.raises(error, match=match):
        publish(run_folder, **arguments)
    assert hub.api_requests == []


@pytest.mark.parametrize("bad", [None, "", "name-only", "a/b/c", "me/bad name", "me/x" + "y" * 100])
def test_check_repo_id_names_the_flag(bad):
    with pytest.raises(ValueError, match="--hub_model_id"):
        check_repo_id(bad, name="--hub_model_id")


def test_check_repo_id_accepts_hub_ids():
    for good in ("me/smd-digits", "Org-Name/model_v2.1"):
        assert check_repo_id(good) == good


def test_a_folder_that_is_not_a_pipeline_is_refused(tmp_path):
    with pytest.raises(ValueError, match="model_index.json"):
        publish(tmp_path, "me/smd-digits", dry_run_dir=tmp_path / "dry")
    assert not (tmp_path / "dry").exists()


def test_upload_sends_exactly_the_dry_run_folder(run_folder, tmp_path, env_token):
    dry = publish(run_folder, "me/smd-digits", dry_run_dir=tmp_path / "dry")
    with fake_hub() as hub:
        result = publish(run_folder, "me/smd-digits", private=True, commit_message="First SMD model")
    assert hub.unexpected == []
    assert hub.files == snapshot_tree(tmp_path / "dry")  # names and bytes
    assert result.files == dry.files
    assert [(c["organization"], c["name"], c["visibility"]) for c in hub.created] == [
        ("me", "smd-digits", "private")
    ]
    assert hub.validated_cards == [hub.files["README.md"].decode()]  # the Hub checked the card's metadata
    assert [c["summary"] for c in hub.commits] == ["First SMD model"]
    assert result.repo_url == "https://huggingface.co/me/smd-digits"
    assert result.commit_url.startswith("https://huggingface.co/me/smd-digits/commit/")
    # The token from the environment authenticated every call.
    assert {r.headers.get("authorization") for r in hub.api_requests} == {f"Bearer {FAKE_TOKEN}"}


def test_default_ignore_patterns_and_extra_ones(run_folder, tmp_path):
    (run_folder / "notes.txt").write_text("private notes")
    result = publish(
        run_folder,
        "me/smd-digits",
        dry_run_dir=tmp_path / "dry",
        ignore_patterns=(*DEFAULT_IGNORE_PATTERNS, "notes.txt"),
    )
    assert "notes.txt" not in result.files
    assert not any(name.startswith(("checkpoint-", "logs/")) for name in result.files)


def test_a_failed_upload_reports_the_hub_error_and_keeps_the_folder(run_folder, env_token):
    before = snapshot_tree(run_folder)
    message = "Your storage quota is exceeded for this namespace"
    with (
        fake_hub(fail_on="commit", status=403, error_message=message) as hub,
        pytest.raises(PublishError) as info,
    ):
        publish(run_folder, "me/smd-digits")
    assert message in str(info.value)
    assert "uploading the files" in str(info.value)
    assert hub.created and hub.commits == []  # the repo was created, the commit was refused
    assert snapshot_tree(run_folder) == before


def test_an_echoed_token_is_scrubbed_from_the_error(run_folder, env_token):
    echoed = f"Invalid credentials in Authorization header: Bearer {FAKE_TOKEN}"
    with fake_hub(fail_on="create", status=401, error_message=echoed), pytest.raises(PublishError) as info:
        publish(run_folder, "me/smd-digits")
    assert FAKE_TOKEN not in str(info.value) and "Invalid credentials" in str(info.value)
    assert info.value.__cause__ is None  # the original exception (with the token) is not chained


def test_a_token_written_into_the_folder_blocks_the_upload(run_folder, env_token):
    (run_folder / "notes.txt").write_text(f"my token is {FAKE_TOKEN}\n")
    with fake_hub() as hub, pytest.raises(ValueError, match="notes.txt.*token"):
        publish(run_folder, "me/smd-digits")
    assert hub.files == {} and hub.commits == []


def test_the_token_never_appears_in_output_logs_or_files(run_folder, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    with fake_hub() as hub:
        assert (
            cli.main(["publish", str(run_folder), "--repo_id", "me/smd-digits", "--token", FAKE_TOKEN]) == 0
        )
        dry = [
            "publish",
            str(run_folder),
            "--repo_id",
            "me/smd-digits",
            "--dry_run_dir",
            str(tmp_path / "dry"),
        ]
        assert cli.main(dry) == 0
    assert {r.headers.get("authorization") for r in hub.api_requests} == {f"Bearer {FAKE_TOKEN}"}
    assert "visibility" not in hub.created[0]  # without --private the Hub's default visibility applies
    captured = capsys.readouterr()
    assert "Published" in captured.out and "Dry run" in captured.out
    assert FAKE_TOKEN not in captured.out + captured.err
    assert FAKE_TOKEN not in caplog.text
    for name, content in {**snapshot_tree(tmp_path), **hub.files}.items():
        assert FAKE_TOKEN.encode() not in content, name


def test_readme_in_the_folder_is_kept_unless_overwrite_card(run_folder, tmp_path):
    (run_folder / "README.md").write_text("# My own card\n")
    kept = publish(run_folder, "me/smd-digits", dry_run_dir=tmp_path / "kept")
    assert (tmp_path / "kept" / "README.md").read_text() == "# My own card\n"
    assert "README.md" in kept.files
    publish(run_folder, "me/smd-digits", dry_run_dir=tmp_path / "new", overwrite_card=True)
    assert ModelCard.load(tmp_path / "new" / "README.md").data.library_name == "diffusers"


NEW_AND_OLD_FLAGS = {
    "--repo_id": "--repo-id",
    "--commit_message": "--commit-message",
    "--dry_run_dir": "--dry-run",
    "--ignore_pattern": "--ignore-pattern",
    "--overwrite_card": "--overwrite-card",
}


def test_cli_help_shows_snake_case_flags_and_hides_the_old_spellings(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["publish", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in (*NEW_AND_OLD_FLAGS, "--private", "--token", "--license"):
        assert flag in out
    for old in NEW_AND_OLD_FLAGS.values():
        assert old not in out
    assert "HF_TOKEN" in out


def test_cli_old_and_new_flag_spellings_do_the_same(run_folder, tmp_path, monkeypatch):
    from diffusers_smd import hub

    calls, real_publish = [], hub.publish
    monkeypatch.setattr(
        hub, "publish", lambda *args, **kwargs: calls.append((args, kwargs)) or real_publish(*args, **kwargs)
    )
    (run_folder / "README.md").write_text("# mine\n")
    (run_folder / "notes.txt").write_text("private notes")
    for spelling in ("new", "old"):
        values = {
            "--repo_id": "me/smd-digits",
            "--commit_message": "hello",
            "--dry_run_dir": str(tmp_path / spelling),
            "--ignore_pattern": "notes.txt",
        }
        argv = ["publish", str(run_folder), "--overwrite_card"] + [x for item in values.items() for x in item]
        if spelling == "old":
            argv = [NEW_AND_OLD_FLAGS.get(arg, arg) for arg in argv]
            assert "--repo-id" in argv and "--overwrite-card" in argv and "--repo_id" not in argv
        assert cli.main(argv) == 0
    new, old = calls
    assert new[0] == old[0] == (str(run_folder), "me/smd-digits")
    assert {**new[1], "dry_run_dir": None} == {**old[1], "dry_run_dir": None}
    assert new[1]["commit_message"] == "hello" and new[1]["overwrite_card"] is True
    assert snapshot_tree(tmp_path / "new") == snapshot_tree(tmp_path / "old")
    assert "notes.txt" not in snapshot_tree(tmp_path / "new")  # the extra ignore pattern applied
    assert snapshot_tree(tmp_path / "new")["README.md"] != b"# mine\n"  # --overwrite_card applied


def test_cli_bad_repo_id_is_one_line_error(run_folder, capsys):
    assert cli.main(["publish", str(run_folder), "--repo_id", "no-namespace"]) == 2
    assert "namespace/name" in capsys.readouterr().err


def test_cli_reports_a_hub_failure_with_exit_status_1(run_folder, capsys, env_token):
    with fake_hub(fail_on="preupload", status=404, error_message="Repository not found"):
        assert cli.main(["publish", str(run_folder), "--repo_id", "me/smd-digits"]) == 1
    err = capsys.readouterr().err
    assert "Repository not found" in err and FAKE_TOKEN not in err
    assert Path(run_folder, "model_index.json").is_file()


SHIMS = {"diffusers_smd_loader.py", "unet/diffusers_smd.py", "scheduler/diffusers_smd.py"}


def test_publish_adds_the_loading_shims(run_folder, tmp_path):
    for name in SHIMS:  # a folder saved without them (e.g. copied by hand): publish must add them
        (run_folder / name).unlink()
    result = publish(run_folder, "me/smd-digits", dry_run_dir=tmp_path / "dry")
    assert set(result.files) >= SHIMS
    assert not any((run_folder / name).exists() for name in SHIMS)  # added to the upload, not to the folder


COMPARE_WITH_LOCAL = """
import diffusers_smd
local = diffusers_smd.SMDPipeline.from_pretrained(sys.argv[1])
assert type(hub) is diffusers_smd.SMDPipeline, type(hub)
assert type(hub.unet) is diffusers_smd.SMDUNet2DModel and type(hub.scheduler) is diffusers_smd.ETSDMDDPMScheduler
assert hub.scheduler.config.etsdm_threshold == 10 and hub.scheduler.config.etsdm_intervals == 5
a, b = hub.unet.state_dict(), local.unet.state_dict()
assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
x = hub(batch_size=1, num_inference_steps=2, generator=torch.manual_seed(0), output_type="pt").images
y = local(batch_size=1, num_inference_steps=2, generator=torch.manual_seed(0), output_type="pt").images
assert torch.equal(x, y)
print("round trip ok")
"""

# A Hub cache built from the uploaded files, HF_HUB_OFFLINE=1. Offline, diffusers 0.42 looks up a repo's
# trust_remote_code files with a model_info call, so this process imports diffusers_smd first (loading path 1).
FROM_OFFLINE_CACHE = """
import sys
import torch
import diffusers_smd
from diffusers import DiffusionPipeline

hub = DiffusionPipeline.from_pretrained("me/smd-digits", trust_remote_code=True)
"""

# The normal online download path, answered by the fake Hub holding the uploaded files; the user's code
# never imports diffusers_smd: trust_remote_code runs the shims that publish uploaded (loading path 2).
FROM_FAKE_HUB_DOWNLOAD = """
import sys
import torch
import huggingface_hub
from diffusers import DiffusionPipeline
from tests.hub_http import FakeHub

fake = FakeHub.serving(sys.argv[2], "me/smd-digits")
huggingface_hub.set_client_factory(fake.client)
assert "diffusers_smd" not in sys.modules
hub = DiffusionPipeline.from_pretrained("me/smd-digits", trust_remote_code=True)
assert "diffusers_smd" in sys.modules and fake.unexpected == [], fake.unexpected
"""


def test_uploaded_repo_loads_back_in_fresh_processes(run_folder, tmp_path, subprocess_env, env_token):
    with fake_hub() as hub:
        publish(run_folder, "me/smd-digits")
    uploaded = tmp_path / "uploaded"
    for name, content in hub.files.items():
        (uploaded / name).parent.mkdir(parents=True, exist_ok=True)
        (uploaded / name).write_bytes(content)
    build_hub_cache(uploaded, "me/smd-digits", tmp_path / "cache")
    base = {k: v for k, v in subprocess_env.items() if k != "HF_TOKEN"}
    runs = {
        "offline cache": (
            FROM_OFFLINE_CACHE,
            {**base, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_MODULES_CACHE": str(tmp_path / "modules1")},
        ),
        "fake Hub download": (
            FROM_FAKE_HUB_DOWNLOAD,
            {  # not offline: every request goes to the in-process fake Hub (an httpx2 MockTransport)
                **{k: v for k, v in base.items() if k != "HF_HUB_OFFLINE"},
                "HF_HUB_CACHE": str(tmp_path / "download-cache"),
                "HF_MODULES_CACHE": str(tmp_path / "modules2"),
                "HF_HOME": str(tmp_path / "hf_home"),
            },
        ),
    }
    children = {  # started together: two cores, about half the wall-clock time
        name: subprocess.Popen(
            [sys.executable, "-c", script + COMPARE_WITH_LOCAL, str(run_folder), str(uploaded)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (script, env) in runs.items()
    }
    for name, child in children.items():
        stdout, stderr = child.communicate(timeout=400)
        assert child.returncode == 0, f"{name}: {stderr[-3000:]}"
        assert "round trip ok" in stdout, name


def test_the_diffusers_smd_command_runs_this_publish(run_folder, tmp_path, monkeypatch):
    """`diffusers-smd publish` goes through diffusers_smd.hub.publish (as train_smd.py --push_to_hub does)."""
    from diffusers_smd import cli, hub

    calls = []
    real_publish = hub.publish

    def recording_publish(*args, **kwargs):
        calls.append((args, kwargs))
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(hub, "publish", recording_publish)
    argv = ["publish", str(run_folder), "--repo_id", "me/smd-digits", "--dry_run_dir", str(tmp_path / "cli")]
    assert cli.main(argv) == 0
    assert len(calls) == 1 and calls[0][0][:2] == (str(run_folder), "me/smd-digits")
    direct = real_publish(run_folder, "me/smd-digits", dry_run_dir=tmp_path / "direct")
    assert snapshot_tree(tmp_path / "cli") == snapshot_tree(tmp_path / "direct")
    assert direct.files == tuple(sorted(snapshot_tree(tmp_path / "cli")))


# --- refused before anything is uploaded (issue 17) --------------------------------------------------------


def publish_both_ways(folder, tmp_path):
    """Run a dry run and a real upload; return the errors and the fake Hub's requests."""
    errors = []
    with fake_hub() as hub:
        for kwargs in ({"dry_run_dir": tmp_path / "dry"}, {}):
            with pytest.raises(ValueError) as info:
                publish(folder, "me/smd-digits", **kwargs)
            errors.append(str(info.value))
    assert not (tmp_path / "dry").exists()
    return errors, hub.api_requests


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_link_leading_outside_the_folder_is_refused_and_named(run_folder, tmp_path, env_token, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("private data")
    link = run_folder / "extra"
    link.symlink_to(outside / "secret.txt" if kind == "file" else outside)
    before = snapshot_tree(run_folder)
    errors, requests = publish_both_ways(run_folder, tmp_path)
    for error in errors:
        assert "extra" in error and "symbolic link" in error and str(outside) in error
    assert requests == []
    assert snapshot_tree(run_folder) == before


def test_links_inside_the_folder_upload_what_they_point_to(run_folder, tmp_path):
    (run_folder / "grid-link.png").symlink_to("sample_grid.png")
    (run_folder / "unet-link").symlink_to("unet", target_is_directory=True)
    (run_folder / "unet" / "loop").symlink_to("..", target_is_directory=True)  # a loop is walked once
    result = publish(run_folder, "me/smd-digits", dry_run_dir=tmp_path / "dry")
    staged = snapshot_tree(tmp_path / "dry")
    assert staged["grid-link.png"] == (run_folder / "sample_grid.png").read_bytes()
    weights = "diffusion_pytorch_model.safetensors"
    assert staged[f"unet-link/{weights}"] == (run_folder / "unet" / weights).read_bytes()
    assert not any(name.startswith("unet/loop/") for name in result.files)
    assert not any(p.is_symlink() for p in (tmp_path / "dry").rglob("*"))


def test_an_ignored_link_leading_outside_is_left_out_quietly(run_folder, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "events").write_text("log")
    (run_folder / "logs" / "run2").symlink_to(outside)  # logs/* is never uploaded
    result = publish(run_folder, "me/smd-digits", dry_run_dir=tmp_path / "dry")
    assert not any(name.startswith("logs/") for name in result.files)


@pytest.mark.parametrize("how", ["removed", "pickled only", "ignored"])
def test_a_folder_without_weights_is_refused(run_folder, tmp_path, env_token, how):
    weights = run_folder / "unet" / "diffusion_pytorch_model.safetensors"
    if how == "pickled only":
        weights.rename(weights.with_suffix(".bin"))
    elif how == "removed":
        weights.unlink()
    if how == "ignored":
        with pytest.raises(ValueError, match=r"no weights.*safetensors"):
            publish(
                run_folder, "me/smd-digits", dry_run_dir=tmp_path / "dry", ignore_patterns=["*.safetensors"]
            )
        return
    errors, requests = publish_both_ways(run_folder, tmp_path)
    for error in errors:
        assert "no weights" in error and "*.safetensors" in error and str(run_folder) in error
    assert requests == []


@pytest.mark.parametrize("name", ["eval_results.json", "model_index.json", "run_summary.json"])
def test_a_corrupt_json_file_is_named(run_folder, tmp_path, env_token, capsys, name):
    (run_folder / name).write_text('{"truncated": ')
    errors, requests = publish_both_ways(run_folder, tmp_path)
    for error in errors:
        assert str(run_folder / name) in error and "not valid JSON" in error
        assert "upload" not in error.split(str(run_folder / name))[0]  # the user's file, not a staged copy
    assert requests == []
    argv = ["publish", str(run_folder), "--repo_id", "me/smd-digits", "--dry_run_dir", str(tmp_path / "dry")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert str(run_folder / name) in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_a_kept_readme_does_not_hide_a_corrupt_run_file(run_folder, tmp_path):
    (run_folder / "README.md").write_text("# My own card\n")
    (run_folder / "eval_results.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="eval_results.json"):
        publish(run_folder, "me/smd-digits", dry_run_dir=tmp_path / "dry")


def test_cli_without_repo_id_names_the_flag(run_folder, capsys):
    assert cli.main(["publish", str(run_folder)]) == 2
    assert "--repo_id is required" in capsys.readouterr().err
