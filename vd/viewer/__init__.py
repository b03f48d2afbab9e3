"""Optional Rerun viewer integration; rerun is imported only when a viewer is asked for."""
