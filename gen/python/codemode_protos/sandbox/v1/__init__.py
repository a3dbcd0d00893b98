"""Generated from protos/codemode/sandbox/v1 by scripts/generate.sh; do not edit."""
