#!/usr/bin/env bash
# Refresh the lock files the image installs: requirements/service.txt (the service's dependencies)
# and requirements/test.txt (what the test suite adds, for Dockerfile.test), every PyPI package at
# an exact version with its sha256 hashes.
#
#   scripts/lock-requirements.sh
#
# They are resolved inside the image's own system stage, against the packages Debian provides there
# (python3-torch, python3-torchvision, numpy, pillow, ...): those are constraints, so a dependency
# that wants another torch fails the refresh instead of bringing in a CUDA build. Needs docker
# (scripts/container-smoke.sh says how to get it) and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

docker build --network host --target system -t explain-service:system .
docker run --rm --network host --user 0 \
  -v "$PWD:/src:ro" -v "$PWD/requirements:/out" -e "HOST_UID=$(id -u)" -e "HOST_GID=$(id -g)" \
  --entrypoint bash explain-service:system -euo pipefail -c '
    site=$(python -c "import sysconfig; print(sysconfig.get_path(\"purelib\"))")
    freeze() { pip list --format=freeze --path "$site" --exclude pip --exclude explain-service | sort -f; }
    # The torch, torchvision, numpy and pillow of Debian are constraints:
    # pip may use them but never replace them. Other Debian packages may be shadowed in the virtual
    # environment where a dependency asks for another version (torch 2.6 itself wants sympy 1.13.1).
    pip list --format=freeze --path /usr/lib/python3/dist-packages \
      | grep -iE "^(torch|torchvision|numpy|pillow)==" > /tmp/debian.txt
    mkdir /tmp/project && cp -r /src/pyproject.toml /src/README.md /src/explain /src/service /tmp/project/
    pip install --quiet --constraint /tmp/debian.txt /tmp/project
    freeze > /tmp/service.in
    pip install --quiet --constraint /tmp/debian.txt "/tmp/project[test]"
    freeze | grep -vxFf /tmp/service.in > /tmp/test.in
    # Direct requirements that Debian already provides (psutil comes with python3-torch) are not
    # installed into the virtual environment: the header names them with Debian'"'"'s version.
    python - /tmp/project/pyproject.toml > /tmp/provided.txt <<"PY"
import importlib.metadata as metadata, re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
groups = {"service": project["dependencies"], "test": project["optional-dependencies"]["test"]}
debian = {d.metadata["Name"].lower(): d.version for d in metadata.distributions(path=["/usr/lib/python3/dist-packages"])}
venv = {d.metadata["Name"].lower() for d in metadata.distributions(path=[p for p in sys.path if "/opt/venv/" in p])}
for group, requirements in groups.items():
    for requirement in requirements:
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()
        if name in debian and name not in venv:
            print(f"{group} {name}=={debian[name]}")
PY
    pip install --quiet uv==0.13.9
    for name in service test; do
      SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt uv pip compile --quiet --no-deps \
        --generate-hashes --no-annotate --python-version 3.13 --no-header "/tmp/$name.in" -o "/tmp/$name.txt"
      { echo "# Pinned with hashes by scripts/lock-requirements.sh against Debian trixie packages:"
        echo "# $({ cat /tmp/debian.txt; awk -v g="$name" '"'"'$1 == g { print $2 }'"'"' /tmp/provided.txt; } | sort -fu | tr "\n" " ")"
        cat "/tmp/$name.txt"; } > "/out/$name.txt"
      chown "$HOST_UID:$HOST_GID" "/out/$name.txt"
    done
    echo "locked: $(grep -c "==" /out/service.txt) service and $(grep -c "==" /out/test.txt) test packages"
  '
