"""Static checks of the dev container in ``.devcontainer/`` (no Docker, no VS Code needed).

The dev container is the Compose stack's JupyterLab image (``docker/jupyter/Dockerfile``:
Python 3.11 and Java 17, what the embedded stack needs) plus make and git, opened on the
checkout; ``make env`` then builds the ``.venv`` the notebooks and the docs use, as on a
laptop. Each setting is tied here to the file it depends on (the Dockerfile, compose.yml, the
Makefile, the settings' defaults), so a change there cannot quietly break the container.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_docker_stack import (
    COMPOSE_FILE,
    DOCKER_DIR,
    DOCKERFILE,
    ENV_EXAMPLE,
    README,
    REPO,
    dockerfile_instructions,
    exec_form,
    interpolate,
    published_ports,
    read_env_file,
    shell_commands,
)

from lambda_demo.settings import Settings
from lambda_demo.stack.doctor import MIN_MEMORY_BYTES

DEVCONTAINER_DIR = REPO / ".devcontainer"
CONFIG = DEVCONTAINER_DIR / "devcontainer.json"
MAKEFILE = REPO / "Makefile"
WORKSPACE = "${containerWorkspaceFolder}"
UNITS = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """devcontainer.json as strict JSON: JSONC's comments would break other readers of it."""
    document = json.loads(CONFIG.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def jupyter_service() -> dict[str, Any]:
    """The Compose stack's ``jupyter`` service, interpolated with .env.example's values."""
    compose = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), read_env_file(ENV_EXAMPLE)[0])
    return compose["services"]["jupyter"]


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", MAKEFILE.read_text(), re.MULTILINE))


def makefile_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*\??=\s*(\S+)", MAKEFILE.read_text(), re.MULTILINE)
    assert match, f"the Makefile defines no {name}"
    return match[1]


def local_features(config: dict[str, Any]) -> list[Path]:
    """The folders of the features referenced by a relative path (``./name``)."""
    return [DEVCONTAINER_DIR / key for key in config.get("features", {}) if key.startswith("./")]


def apt_packages(script: str) -> set[str]:
    """Every package an ``apt-get install`` in a shell script or RUN line installs."""
    packages: set[str] = set()
    for line in script.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for words in shell_commands(line):
            if words[:2] == ["apt-get", "install"]:
                packages |= {w for w in words[2:] if not w.startswith("-")}
    return packages


def dockerfile_env() -> dict[str, str]:
    pairs = [
        word.split("=", 1)
        for ins in dockerfile_instructions()
        if ins.keyword == "ENV"
        for word in shlex.split(ins.args)
    ]
    return dict(pairs)


def test_builds_the_compose_stacks_jupyter_image(
    config: dict[str, Any], jupyter_service: dict[str, Any]
) -> None:
    build = config["build"]
    context = (DEVCONTAINER_DIR / build["context"]).resolve()
    assert (DEVCONTAINER_DIR / build["dockerfile"]).resolve() == DOCKERFILE
    assert context == REPO, "build from the repository root, like compose.yml"
    compose_build = jupyter_service["build"]
    assert (DOCKER_DIR / compose_build["context"]).resolve() == context
    assert (context / compose_build["dockerfile"]).resolve() == DOCKERFILE
    declared = {
        ins.args.split("=", 1)[0] for ins in dockerfile_instructions() if ins.keyword == "ARG"
    }
    assert set(build.get("args", {})) <= declared, "pass only ARGs the Dockerfile declares"


def test_forwards_the_ports_jupyter_and_spark_listen_on(
    config: dict[str, Any], jupyter_service: dict[str, Any]
) -> None:
    instructions = dockerfile_instructions()
    cmd = exec_form(next(i.args for i in reversed(instructions) if i.keyword == "CMD"))
    jupyter_port = int(next(a for a in cmd if a.startswith("--port=")).split("=", 1)[1])
    exposed = {int(p) for i in instructions if i.keyword == "EXPOSE" for p in i.args.split()}
    forwarded = config["forwardPorts"]
    assert jupyter_port in forwarded
    assert set(forwarded) <= exposed, "forward only ports the image exposes"
    published = {port.container_port for port in published_ports(jupyter_service)}
    assert set(forwarded) == published, "the same ports as the Compose stack's JupyterLab"
    assert set(config.get("portsAttributes", {})) <= {str(port) for port in forwarded}


def test_setup_runs_make_targets_that_exist_with_make_installed(config: dict[str, Any]) -> None:
    commands = shell_commands(config["postCreateCommand"])
    makes = [words for words in commands if words[0] == "make"]
    assert makes, "set up with the Makefile, as the README does"
    targets = {word for words in makes for word in words[1:] if not word.startswith("-")}
    assert "env" in targets, "`make env` builds the .venv the notebooks run in"
    assert targets <= makefile_targets(), f"no such make target: {targets - makefile_targets()}"
    runs = [i.args for i in dockerfile_instructions() if i.keyword == "RUN"]
    installed = apt_packages("\n".join(runs))
    for feature in local_features(config):
        installed |= apt_packages((feature / "install.sh").read_text())
    assert {"make", "git"} <= installed, "make for the setup, git for VS Code's source control"


def test_vscode_opens_the_venv_that_make_env_builds(config: dict[str, Any]) -> None:
    vscode = config["customizations"]["vscode"]
    assert {"ms-python.python", "ms-toolsai.jupyter"} <= set(vscode["extensions"])
    venv = makefile_variable("VENV")
    assert vscode["settings"]["python.defaultInterpreterPath"] == f"{WORKSPACE}/{venv}/bin/python"


def test_local_features_follow_the_specification(config: dict[str, Any]) -> None:
    features = local_features(config)
    assert features, "make and git come from a local feature"
    for folder in features:
        assert folder.parent == DEVCONTAINER_DIR, f"{folder}: a direct sub-folder of .devcontainer"
        metadata = json.loads((folder / "devcontainer-feature.json").read_text())
        assert metadata["id"] == folder.name, "a local feature's id is its folder's name"
        assert re.fullmatch(r"\d+\.\d+\.\d+", metadata["version"]) and metadata["name"]
        script = folder / "install.sh"
        assert script.read_text().startswith("#!") and os.access(script, os.X_OK), script


def test_runs_as_the_images_user_with_state_and_caches_where_a_checkout_keeps_them(
    config: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    user = config["remoteUser"]
    instructions = dockerfile_instructions()
    assert instructions[-1].user == user
    assert any(
        i.keyword == "RUN" and re.search(rf"useradd .*--create-home.* {user}\b", i.args)
        for i in instructions
    ), f"the image must create {user} with a home directory"
    env = config["containerEnv"]
    # The image points both at /opt for the Compose layout; the dev container undoes that.
    overridden = {name for name in dockerfile_env() if name.startswith("LAMBDA_DEMO_")}
    assert overridden <= set(env)
    clean_env.chdir(REPO)
    assert env["LAMBDA_DEMO_HOME"].replace(WORKSPACE, str(REPO)) == str(
        Settings(_env_file=None).home
    ), "the checkout's git-ignored .lambda-demo, as outside the container"
    assert env["LAMBDA_DEMO_CACHE"] == f"/home/{user}/.cache/lambda-demo", "the usual cache"
    assert config.get("init") is True, "reap the stack's exited services, like compose.yml"


def test_host_has_room_for_spark_and_the_stack(config: dict[str, Any]) -> None:
    needs = config["hostRequirements"]
    cores = int(re.fullmatch(r"local\[(\d+)\]", Settings.model_fields["spark_master"].default)[1])
    assert needs["cpus"] >= cores, "Spark runs local[N]: one core per task slot"
    amount, unit = re.fullmatch(r"(\d+)([tgmk]b)", needs["memory"]).groups()
    # doctor wants 4 GB free for the stack; VS Code, Jupyter and the OS need as much again.
    assert int(amount) * UNITS[unit] >= 2 * MIN_MEMORY_BYTES


def test_docker_readme_documents_the_dev_container() -> None:
    text = README.read_text()
    assert ".devcontainer/devcontainer.json" in text
    assert "make env" in text
