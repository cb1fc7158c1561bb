#!/bin/sh
# Runs as root while the dev container's image is built (a local dev container Feature):
# docker/jupyter/Dockerfile is a slim Python image without make or git.
set -eu
apt-get update
apt-get install -y --no-install-recommends make git
rm -rf /var/lib/apt/lists/*
