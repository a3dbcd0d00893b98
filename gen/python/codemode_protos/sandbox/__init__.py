"""Generated from protos/codemode/sandbox by scripts/generate.sh; do not edit."""
