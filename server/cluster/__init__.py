"""The cluster-wide session registry many control-plane instances share (issue 11)."""
