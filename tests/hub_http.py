"""An in-process fake of the Hugging Face Hub HTTP API, for upload tests without a network.

Installed with ``huggingface_hub.set_client_factory``: every request huggingface_hub makes goes
through an ``httpx2.MockTransport`` whose handler answers the calls an upload makes and records
what arrives. huggingface_hub's own client builds every request (repo create, preupload, the NDJSON
commit), so the test sees exactly what the real Hub would receive.

* ``POST /api/repos/create``: records the request (name, organization, private) and answers with
  the repo URL.
* ``POST /api/models/{repo}/preupload/{rev}``: answers ``"regular"`` for every file, so the bytes
  travel base64-encoded inside the commit. (``"lfs"`` would send the file through hf_xet's own
  native HTTP client, which this handler cannot see, so the fake never asks for it.)
* ``POST /api/models/{repo}/commit/{rev}``: decodes the NDJSON payload and records each file's
  path and bytes. An ``lfsFile`` entry fails the test: it means bytes were sent elsewhere.
* ``POST /api/validate-yaml`` (sent for README.md): parses the card's front matter with
  huggingface_hub's own card parser; a card that does not parse gets the Hub's 400 answer.
* Downloads of what was committed, so the repo can be loaded back through the normal download
  path: ``GET /api/models/{repo}`` and ``.../revision/{rev}`` (model info with the file list),
  ``GET /api/models/{repo}/tree/{rev}`` (the listing ``snapshot_download`` reads) and
  ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (the file, with ``X-Repo-Commit`` and ``ETag``).
  :meth:`FakeHub.serving` starts a fake that already holds a folder's files.
* ``GET /api/agent-harnesses``: huggingface_hub's best-effort user-agent lookup (made only when
  not offline); answered 404, which it ignores, and not counted as unexpected.
* Anything else: 404, recorded in ``unexpected``.

``fail_on="commit"`` (or ``"preupload"``, ``"create"``) makes that call answer ``status`` with
``error_message`` the way the Hub reports errors (JSON ``{"error": ...}`` and ``X-Error-Message``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx2
import huggingface_hub

ENDPOINT_PATHS = ("create", "preupload", "commit")


AGENT_REGISTRY_PATH = "/api/agent-harnesses"


@dataclass
class FakeHub:
    fail_on: str | None = None
    status: int = 403
    error_message: str = "You don't have the rights to create a model under the namespace"
    created: list[dict] = field(default_factory=list)
    commits: list[dict] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[httpx2.Request] = field(default_factory=list)
    validated_cards: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    repo_id: str | None = None  # the repo the files were committed to (served back for downloads)
    commit_sha: str = "0" * 40

    def __post_init__(self) -> None:
        if self.fail_on is not None and self.fail_on not in ENDPOINT_PATHS:
            raise ValueError(f"fail_on must be one of {ENDPOINT_PATHS} or None, got {self.fail_on!r}")

    def _error(self) -> httpx2.Response:
        return httpx2.Response(
            self.status, json={"error": self.error_message}, headers={"X-Error-Message": self.error_message}
        )

    @classmethod
    def serving(cls, folder, repo_id: str) -> FakeHub:
        """A fake Hub whose repo ``repo_id`` already holds every file under ``folder``."""
        root = pathlib.Path(folder)
        hub = cls(repo_id=repo_id)
        hub.files = {
            p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }
        return hub

    @property
    def api_requests(self) -> list[httpx2.Request]:
        """The requests our code caused: all but huggingface_hub's own agent-registry lookup.

        huggingface_hub fetches that registry at most once a day, without a token, depending on
        its local cache; counting it would make assertions depend on the machine's state.
        """
        return [r for r in self.requests if r.url.path != AGENT_REGISTRY_PATH]

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        path = request.url.path
        if self.repo_id is not None and self.files and request.method in ("GET", "HEAD"):
            answer = self._download(request.method, path)
            if answer is not None:
                return answer
        if request.method == "POST" and path == "/api/repos/create":
            if self.fail_on == "create":
                return self._error()
            body = json.loads(request.content)
            self.created.append(body)
            return httpx2.Response(
                200, json={"url": f"https://huggingface.co/{body['organization']}/{body['name']}"}
            )
        if request.method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(request.content)["content"])
        if request.method == "POST" and path.startswith("/api/models/") and "/preupload/" in path:
            if self.fail_on == "preupload":
                return self._error()
            body = json.loads(request.content)
            answer = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in body["files"]
            ]
            return httpx2.Response(200, json={"files": answer})
        if request.method == "POST" and path.startswith("/api/models/") and "/commit/" in path:
            if self.fail_on == "commit":
                return self._error()
            return self._commit(path, request.content)
        if request.method == "GET" and path == AGENT_REGISTRY_PATH:
            return httpx2.Response(404, json={"error": "fake Hub: no agent registry"})
        self.unexpected.append(f"{request.method} {path}")
        return httpx2.Response(404, json={"error": f"fake Hub: no route for {request.method} {path}"})

    def _validate_yaml(self, content: str) -> httpx2.Response:
        self.validated_cards.append(content)
        try:
            card = huggingface_hub.ModelCard(content, ignore_metadata_errors=False)
        except Exception as err:  # what the Hub answers for metadata it cannot read
            return httpx2.Response(400, json={"errors": [{"message": str(err)}], "error": "Invalid metadata"})
        if not card.data.to_dict():
            return httpx2.Response(200, json={"warnings": [{"message": "empty or missing yaml metadata"}]})
        return httpx2.Response(200, json={"warnings": []})

    def _download(self, method: str, path: str) -> httpx2.Response | None:
        repo, revisions = self.repo_id, ("main", self.commit_sha)
        if path in (f"/api/models/{repo}", *(f"/api/models/{repo}/revision/{r}" for r in revisions)):
            siblings = [{"rfilename": name} for name in sorted(self.files)]
            return httpx2.Response(
                200, json={"id": repo, "sha": self.commit_sha, "private": False, "siblings": siblings}
            )
        if path in (f"/api/models/{repo}/tree/{r}" for r in revisions):
            entries = [
                {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for name, data in sorted(self.files.items())
            ]
            folders = sorted({name.rsplit("/", 1)[0] for name in self.files if "/" in name})
            entries += [{"type": "directory", "path": name, "oid": "0" * 40} for name in folders]
            return httpx2.Response(200, json=entries)
        for revision in revisions:
            prefix = f"/{repo}/resolve/{revision}/"
            if path.startswith(prefix):
                data = self.files.get(path.removeprefix(prefix))
                if data is None:
                    return httpx2.Response(
                        404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": "no such file"}
                    )
                headers = {
                    "X-Repo-Commit": self.commit_sha,
                    "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                    "Content-Length": str(len(data)),
                }
                return httpx2.Response(200, headers=headers, content=b"" if method == "HEAD" else data)
        return None

    def _commit(self, path: str, content: bytes) -> httpx2.Response:
        lines = [json.loads(line) for line in content.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        for line in lines:
            if line["key"] == "file":
                value = line["value"]
                assert value["encoding"] == "base64", value["encoding"]
                self.files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] != "header":
                raise AssertionError(f"fake Hub received an unsupported commit entry: {line['key']}")
        self.commits.append(
            {"path": path, "summary": header["summary"], "description": header["description"]}
        )
        repo = path.removeprefix("/api/models/").split("/commit/")[0]
        self.repo_id = repo
        return httpx2.Response(
            200,
            json={
                "commitUrl": f"https://huggingface.co/{repo}/commit/{self.commit_sha}",
                "commitOid": self.commit_sha,
            },
        )

    def client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self.handle))


@contextmanager
def fake_hub(**kwargs):
    """Route huggingface_hub's HTTP client to a :class:`FakeHub` for the duration of the block."""
    hub = FakeHub(**kwargs)
    huggingface_hub.set_client_factory(hub.client)
    try:
        yield hub
    finally:
        huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)


# ---------------------------------------------------------------------------------------------
# A saved run folder to publish: a tiny pipeline plus the run files training writes.


def make_run_folder(
    path,
    *,
    objective: str = "smd",
    etsdm: tuple[int, int] | None = (10, 5),
    plain_diffusers: bool = False,
    run_summary: bool = True,
    eval_results: bool = True,
    sample_grid: bool = True,
    summary: dict | None = None,
):
    """Save a tiny randomly initialised pipeline to ``path`` with the run files training writes.

    An ``SMDPipeline`` whose denoiser is an ``SMDUNet2DModel`` (objective "smd"/"smd-mixture") or a
    plain ``UNet2DModel`` ("vanilla"), with an ``ETSDMDDPMScheduler(etsdm_threshold, etsdm_intervals)``
    when ``etsdm=(threshold, intervals)``, else a ``DDPMScheduler`` (100 training timesteps).
    ``plain_diffusers=True`` saves a stock ``DDPMPipeline`` instead (nothing of diffusers_smd).
    ``run_summary.json`` is a :class:`~diffusers_smd.training.RunSummary` built with the dataclass (its
    ``config`` from ``UnconditionalTrainingConfig``), so a renamed field breaks this fixture; ``summary``
    replaces fields. Also writes ``checkpoint-10/``, ``.tmp-checkpoint-20/`` and ``logs/``, which publishing
    must leave out.
    """
    import dataclasses
    import pathlib

    from diffusers import DDPMPipeline, DDPMScheduler
    from PIL import Image

    import diffusers_smd
    from diffusers_smd import ETSDMDDPMScheduler, SMDPipeline, SMDUNet2DModel
    from diffusers_smd.training import RunSummary, UnconditionalTrainingConfig
    from diffusers_smd.training.arguments import config_to_dict
    from diffusers_smd.training.engine import parameter_counts

    path = pathlib.Path(path)
    from tests.pipeline_testing import tiny_unet

    unet = tiny_unet(perturbed=False)
    if etsdm is not None:
        scheduler = ETSDMDDPMScheduler(
            num_train_timesteps=100, etsdm_threshold=etsdm[0], etsdm_intervals=etsdm[1]
        )
    else:
        scheduler = DDPMScheduler(num_train_timesteps=100)
    if plain_diffusers:
        pipeline = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100))
    elif objective in ("smd", "smd-mixture"):
        denoiser = SMDUNet2DModel.from_unet(
            unet, latent_dim=8, identifier_block_out_channels=(8,), identifier_norm_num_groups=4
        )
        pipeline = SMDPipeline(unet=denoiser, scheduler=scheduler)
    else:
        pipeline = SMDPipeline(unet=unet, scheduler=scheduler)
    pipeline.save_pretrained(path)

    if run_summary:
        config = UnconditionalTrainingConfig(
            objective=objective,
            output_dir=str(path),
            resolution=8,
            block_out_channels=(8, 16),
            layers_per_block=1,
            train_batch_size=16,
            max_train_steps=1234,
            ddpm_num_steps=100,
            ddpm_num_inference_steps=50,
            smd_latent_dim=8,
            use_ema=True,
            etsdm=etsdm is not None,
            etsdm_threshold=etsdm and etsdm[0],
            etsdm_intervals=etsdm[1] if etsdm else 5,
            seed=0,
        )
        facts = RunSummary(
            task="unconditional-image-generation",
            model_class=type(pipeline.unet).__name__,
            noise_scheduler=type(pipeline.scheduler).__name__,
            objective=objective,
            prediction_type="epsilon",
            num_train_timesteps=100,
            dataset="digits",
            dataset_kind="builtin",
            dataset_size=1437,
            global_step=1234,
            max_train_steps=1234,
            total_batch_size=16,
            num_processes=1,
            use_ema=True,
            seed=0,
            wall_clock_seconds=187.2,
            parameter_counts=parameter_counts(pipeline.unet, list(pipeline.unet.parameters())),
            etsdm={
                "enabled": etsdm is not None,
                "threshold": etsdm and etsdm[0],
                "intervals": etsdm and etsdm[1],
            },
            resolution=8,
            num_channels=1,
            final_loss=0.04231,
            package_version=diffusers_smd.__version__,
            config=config_to_dict(config),
        )
        dataclasses.replace(facts, **(summary or {})).write(path)
    if eval_results:
        rows = [
            {
                "metric": "frechet_digits_distance",
                "scheduler": "ETSDMDPMSolverMultistepScheduler",
                "num_inference_steps": 10,
                "value": 12.3456,
                "num_samples": 512,
            },
            {
                "metric": "frechet_digits_distance",
                "scheduler": "DDIMScheduler",
                "num_inference_steps": 50,
                "value": 9.87654,
                "num_samples": 512,
            },
            {  # a list value (the class histogram) has no row in the card's table
                "metric": "class_histogram",
                "scheduler": "DDIMScheduler",
                "num_inference_steps": 50,
                "value": [0.1] * 10,
                "num_samples": 512,
            },
        ]
        (path / "eval_results.json").write_text(json.dumps(rows, indent=2))
    if sample_grid:
        Image.new("L", (32, 32), color=128).save(path / "sample_grid.png")
    (path / "checkpoint-10" / "unet").mkdir(parents=True)
    (path / "checkpoint-10" / "optimizer.bin").write_bytes(b"optimizer state")
    (path / "checkpoint-10" / "unet" / "config.json").write_text("{}")
    (path / ".tmp-checkpoint-20").mkdir()  # left by a run killed while checkpointing
    (path / ".tmp-checkpoint-20" / "random_states_0.pkl").write_bytes(b"rng")
    (path / "logs").mkdir()
    (path / "logs" / "events.out.tfevents.1").write_bytes(b"tensorboard")
    return path


def snapshot_tree(root) -> dict[str, bytes]:
    """Every file under ``root`` (relative POSIX path -> bytes)."""
    import pathlib

    root = pathlib.Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
