"""The podman backend (and docker, which takes the same CLI flags): participant code in an OCI container.

Every container is rootful-engine-run but unprivileged inside: `--user uid:gid`, `--cap-drop all`,
`--security-opt no-new-privileges`, `--network none`, `--read-only` root, tmpfs /tmp, explicit `--shm-size`,
`--memory` equal to `--memory-swap`, `--pids-limit`, `--cpus`, explicit ulimits, no log driver (the runner
keeps bounded tails of the attached streams itself, nothing piles up on disk). Each container is labelled
`midog.sandbox=<label>` plus the spec's labels, so `reap(label)` finds leftovers after a worker crash with
`ps -a --filter label=...`, and `midog.sandbox.owner=<digest of the runtime directory>`, so that the start-up
sweep (`leftover_labels`) finds only the runs of workers with this runtime directory, never those of another
live worker or server that shares the engine. The runner enforces the wall clock: at the limit it kills and removes.
/output is a plain directory of the run, watched for its quota (output.py) and bounded per file by
RLIMIT_FSIZE: the worker mounts nothing in the host's namespace for a container (the engine's own mounts
live in the container's namespace).

Imports the stdlib and worker.sandbox only; must not import Celery, SQLAlchemy, FastAPI or torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from worker.sandbox.bwrap import default_runtime_dir
from worker.sandbox.output import OutputArea, RunDirectory, remove_run_directory, run_directories
from worker.sandbox.spec import SandboxError, SandboxResult, SandboxSpec
from worker.sandbox.streams import TailReader

LABEL_KEY = "midog.sandbox"
OWNER_KEY = "midog.sandbox.owner"
_ENGINE_TIMEOUT_S = 60.0
# containers-common's default profile; podman's built-in default is the same file.
PODMAN_SECCOMP = Path("/usr/share/containers/seccomp.json")
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: clone may create none of these.
_CLONE_NAMESPACE_FLAGS = 0x7E020000
_NAMESPACE_CALLS = {"clone", "clone3", "unshare", "setns"}
# Kernel keyrings are not namespaced; docker's default refuses them too.
_KEYRING_CALLS = {"keyctl", "add_key", "request_key"}


def strict_seccomp_profile(default: Path, destination: Path) -> Path | None:
    """Podman's default seccomp profile, minus new namespaces and keyrings; written to `destination`.

    Podman's default lets an unprivileged process create user namespaces (for nested rootless
    containers), and a user namespace is the usual door to kernel attack surface. Here `unshare` and
    `setns` fail with EPERM, `clone` is allowed only without namespace flags, and `clone3` (whose flags
    seccomp cannot inspect) fails with ENOSYS so that the C library falls back to `clone`; the keyring
    calls fail with EPERM. Returns None
    when the default profile is not installed (podman's built-in default then applies).
    """
    try:
        profile = json.loads(default.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rules = []
    for rule in profile.get("syscalls", []):
        names = [n for n in rule.get("names", []) if n not in _NAMESPACE_CALLS | _KEYRING_CALLS]
        if names:
            rules.append({**rule, "names": names})
    rules += [
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": _CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        },
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["unshare", "setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        {"names": sorted(_KEYRING_CALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
    ]
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_suffix(".tmp")
    temporary.write_text(json.dumps({**profile, "syscalls": rules}), encoding="utf-8")
    temporary.replace(destination)
    return destination


def host_ids(spec: SandboxSpec) -> tuple[int, int]:
    """The host uid and gid that the sandbox user's files and processes carry."""
    base = spec.userns_base or 0
    return base + spec.uid, base + spec.gid


class PodmanBackend:
    """Runs argv (or the image's own command when argv is empty) in a container under a SandboxSpec."""

    name = "podman"
    # --read-only-tmpfs=false: no writable /run and /var/tmp; /tmp is the only tmpfs, with its size.
    read_only_flags: tuple[str, ...] = ("--read-only", "--read-only-tmpfs=false")

    def __init__(
        self,
        *,
        executable: str = "podman",
        runtime: str | None = "runc",
        runtime_dir: Path | None = None,
        host_paths: Mapping[str, str] | None = None,
    ) -> None:
        self.executable = executable
        self.runtime = runtime
        self.runtime_dir = runtime_dir or default_runtime_dir()
        self.host_paths = dict(host_paths or {})
        self._seccomp: Path | bool | None = None

    @property
    def owner(self) -> str:
        """This backend's owner label: the runtime directory's digest (workers sharing one reap each other's)."""
        return hashlib.sha256(str(self.runtime_dir.resolve()).encode()).hexdigest()[:16]

    def host_path(self, path: Path) -> str:
        """`path` as the engine sees it: worker prefixes mapped by `host_paths` (longest prefix first).

        A worker that runs in a container and drives the host's engine through its socket names bind
        sources in its own file system; the engine resolves them on the host.
        """
        text = str(path)
        for inside in sorted(self.host_paths, key=len, reverse=True):
            prefix = inside.rstrip("/")
            if text == prefix or text.startswith(prefix + "/"):
                return self.host_paths[inside].rstrip("/") + text[len(prefix) :]
        return text

    def check(self) -> None:
        if shutil.which(self.executable) is None:
            raise SandboxError(f"the {self.name} sandbox backend needs {self.executable} on the worker host")

    def load_image(self, path: Path, archive: Any) -> str:
        """Load a validated image archive into this engine; its image id (worker.containers.engine)."""
        from worker.containers.engine import load_image

        return load_image(path, archive, executable=self.executable)

    def remove_image(self, image_id: str) -> None:
        from worker.containers.engine import remove_image

        remove_image(image_id, executable=self.executable)

    def release_image(self, image_id: str, keep: int) -> None:
        """A run of the image ended: keep it for reuse unless older than the `keep` latest used."""
        from worker.containers.engine import release_image

        release_image(
            image_id, ledger=self.runtime_dir / f"{self.name}-images.json", keep=keep, executable=self.executable
        )

    def problem(self) -> str | None:
        """Why containers cannot run here (engine missing or not answering), or None."""
        try:
            self.check()
            self._engine("version", check=True)
        except SandboxError as exc:
            return str(exc)
        return None

    def _engine(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                [self.executable, *args], capture_output=True, text=True, timeout=_ENGINE_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise SandboxError(f"{self.executable} {args[0]} did not answer in {_ENGINE_TIMEOUT_S:.0f} s") from exc
        if check and done.returncode != 0:
            raise SandboxError(f"{self.executable} {args[0]} failed: {done.stderr.strip()[-500:]}")
        return done

    def run_arguments(
        self, spec: SandboxSpec, name: str, output_path: Path, *, file_size_limit: int | None = None
    ) -> list[str]:
        """`<engine> run` arguments up to and including the image (exposed for tests and docs)."""
        if spec.image is None:
            raise SandboxError(f"the {self.name} backend needs an image in the SandboxSpec")
        memory = str(spec.memory_bytes)
        args = ["run", "--name", name, "--pull", "never", "--network", "none", "--log-driver", "none"]
        if self.runtime:
            args += ["--runtime", self.runtime]
        args += ["--user", f"{spec.uid}:{spec.gid}", "--cap-drop", "all", "--security-opt", "no-new-privileges"]
        for group in spec.groups:
            args += ["--group-add", str(group)]
        if spec.userns_base is not None:
            # The image's ids 0..size-1 are host ids base..base+size-1: its uid 999 is nobody on the host.
            mapping = f"0:{spec.userns_base}:{spec.userns_size}"
            args += ["--uidmap", mapping, "--gidmap", mapping]
        args += self._seccomp_arguments()
        args += [
            *self.read_only_flags,
            "--memory",
            memory,
            "--memory-swap",
            memory,
            "--pids-limit",
            str(spec.pids),
        ]
        args += ["--cpus", f"{spec.cpus:g}", "--shm-size", str(spec.shm_bytes), "--hostname", "sandbox"]
        args += ["--ulimit", f"nofile={spec.nofile}:{spec.nofile}", "--ulimit", f"nproc={spec.pids}:{spec.pids}"]
        args += ["--ulimit", "core=0:0", "--tmpfs", f"/tmp:rw,nosuid,nodev,size={spec.tmp_bytes},mode=1777"]
        for scratch in spec.scratch:
            # U: owned by the container's user; podman copies the image's content there first (tmpcopyup).
            args += ["--tmpfs", f"{scratch.target}:rw,nosuid,nodev,size={scratch.size_bytes},U"]
        if file_size_limit is not None:
            args += ["--ulimit", f"fsize={file_size_limit}:{file_size_limit}"]
        args += ["--label", f"{LABEL_KEY}={spec.label}", "--label", f"{OWNER_KEY}={self.owner}"]
        for key, value in spec.labels.items():
            args += ["--label", f"{key}={value}"]
        for mount in spec.mounts:
            if not mount.source.exists():
                raise SandboxError(f"mount source {mount.source} does not exist")
            args += ["-v", f"{self.host_path(mount.source)}:{mount.target}:{self._volume_options('ro')}"]
        args += ["-v", f"{self.host_path(output_path)}:/output:{self._volume_options('rw')}"]
        if spec.workdir is not None:
            args += ["--workdir", spec.workdir]
        for key, value in spec.environment().items():
            args += ["--env", f"{key}={value}"]
        if spec.gpu is not None:
            args += self._gpu_arguments(spec.gpu)
        return [*args, spec.image]

    def _seccomp_arguments(self) -> list[str]:
        if self._seccomp is None:
            self._seccomp = strict_seccomp_profile(PODMAN_SECCOMP, self.runtime_dir / "seccomp.json") or False
        return ["--security-opt", f"seccomp={self._seccomp}"] if self._seccomp else []

    def _volume_options(self, mode: str) -> str:
        return f"{mode},nosuid,nodev"

    def _remove(self, *names: str) -> None:
        self._engine("rm", "--force", "--time", "0", *names)

    def _gpu_arguments(self, index: int) -> list[str]:
        # Podman reaches NVIDIA GPUs through CDI (nvidia-ctk cdi generate); docker through its --gpus flag.
        return ["--device", f"nvidia.com/gpu={index}"]

    def run(self, spec: SandboxSpec, argv: Sequence[str], *, output_dir: Path) -> SandboxResult:
        """Run the container; copy its /output to output_dir; never raise for the code's own faults."""
        self.check()
        run_dir = RunDirectory(self.runtime_dir, self.name, spec.label)
        name = f"midog-{spec.label}-{run_dir.run_id}"
        host_uid, host_gid = host_ids(spec)
        area = OutputArea(
            run_dir.path / "output",
            quota_bytes=spec.output_bytes,
            max_files=spec.output_files,
            uid=host_uid,
            gid=host_gid,
        )
        try:
            area.create()
            # The quota is watched, not kernel-enforced: one file must not outgrow it between two looks.
            arguments = self.run_arguments(spec, name, area.path, file_size_limit=spec.output_bytes + 1)
            command = [self.executable, *arguments, *argv]
            return self._execute(spec, command, name, area, output_dir)
        finally:
            self._remove(name)
            area.destroy()
            remove_run_directory(run_dir.path)

    def _execute(
        self, spec: SandboxSpec, command: list[str], name: str, area: OutputArea, output_dir: Path
    ) -> SandboxResult:
        started = time.monotonic()
        merged = subprocess.STDOUT if spec.merge_output else subprocess.PIPE
        # The run's own directory as the working directory: conmon creates an empty file `oom` in its working
        # directory when the container is OOM-killed, and must not litter the worker's (a checkout, say).
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=merged,
            cwd=area.path.parent,
        )
        stdout = TailReader(process.stdout, spec.log_tail_bytes)
        stderr = TailReader(process.stderr, spec.log_tail_bytes)

        def kill() -> None:
            self._engine("kill", "--signal", "KILL", name)

        area.start_watchdog(kill)
        timed_out = False
        try:
            process.wait(timeout=spec.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if process.returncode is None:
                kill()
                try:
                    process.wait(timeout=_ENGINE_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            area.stop_watchdog()
        wall = time.monotonic() - started
        state = self._engine("inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", name)
        fields = state.stdout.split()
        if state.returncode != 0 or len(fields) != 2:
            # The engine could not create or start the container: an infrastructure fault, retried.
            engine = (stderr.text() or stdout.text())[-500:]
            inspect = state.stderr.strip()[-300:]
            raise SandboxError(
                f"{self.executable} run failed to start the container (exit {process.returncode}, "
                f"inspect: {inspect or state.stdout.strip()[:100]}): {engine}"
            )
        exit_code = int(fields[0])
        # With cgroup v1 the engines often miss OOMKilled; a SIGKILL we did not send is the memory cgroup.
        memory_exceeded = not timed_out and (fields[1] == "true" or exit_code == 137)
        output_exceeded = area.exceeded()
        area.copy_to(output_dir)
        return SandboxResult(
            exit_code=exit_code,
            timed_out=timed_out,
            memory_exceeded=memory_exceeded and not area.watchdog_fired,
            output_exceeded=output_exceeded,
            wall_seconds=wall,
            output_dir=output_dir,
            stdout_tail=stdout.text(),
            stderr_tail=stderr.text(),
        )

    def list_containers(self, label: str) -> list[str]:
        """Ids of all containers (running or not) labelled `label`."""
        done = self._engine("ps", "-a", "-q", "--filter", f"label={LABEL_KEY}={label}", check=True)
        return done.stdout.split()

    def leftover_labels(self) -> list[str]:
        """Labels of this owner's sandbox containers on the engine (running or not) and of runs on record here."""
        done = self._engine(
            "ps", "-a", "--filter", f"label={OWNER_KEY}={self.owner}",
            "--format", f'{{{{index .Labels "{LABEL_KEY}"}}}}', check=True,
        )  # fmt: skip
        labels = {line.strip() for line in done.stdout.splitlines() if line.strip()}
        base = self.runtime_dir / self.name
        if base.is_dir():
            labels.update(p.name for p in base.iterdir() if p.is_dir())
        return sorted(labels)

    def reap(self, label: str) -> int:
        """Remove every container labelled `label` and the output areas of its runs."""
        ids = self.list_containers(label)
        if ids:
            self._remove(*ids)
        for run_dir in run_directories(self.runtime_dir, self.name, label):
            remove_run_directory(run_dir)
        return len(ids)


class DockerBackend(PodmanBackend):
    """Docker takes podman's flags; only the GPU flag and the default runtime differ."""

    name = "docker"
    # Docker's --read-only adds no tmpfs of its own.
    read_only_flags = ("--read-only",)

    def __init__(
        self,
        *,
        runtime_dir: Path | None = None,
        host_paths: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(executable="docker", runtime=None, runtime_dir=runtime_dir, host_paths=host_paths)

    def _volume_options(self, mode: str) -> str:
        # Docker's -v accepts no mount flags; its bind mounts are nosuid/nodev-free, --cap-drop covers suid.
        return mode

    def _remove(self, *names: str) -> None:
        self._engine("rm", "--force", *names)

    def _gpu_arguments(self, index: int) -> list[str]:
        return ["--gpus", f"device={index}"]

    def run_arguments(
        self, spec: SandboxSpec, name: str, output_path: Path, *, file_size_limit: int | None = None
    ) -> list[str]:
        # Docker maps users only daemon-wide (userns-remap); a per-container mapping it cannot give is refused.
        if spec.userns_base is not None:
            raise SandboxError("the docker backend cannot map user ids per container; use podman")
        return super().run_arguments(spec, name, output_path, file_size_limit=file_size_limit)


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible on this host."""
    if os.path.exists("/dev/nvidia0"):
        return True
    return shutil.which("nvidia-smi") is not None and _nvidia_smi_lists_gpu()


def _nvidia_smi_lists_gpu() -> bool:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
        return done.returncode == 0 and "GPU" in done.stdout
    return False
