"""Generated from protos/codemode by scripts/generate.sh; do not edit."""
