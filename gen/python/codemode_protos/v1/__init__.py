"""Generated from protos/codemode/v1 by scripts/generate.sh; do not edit."""
