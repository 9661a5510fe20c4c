"""The notebook surface: the ``%agh`` magics and (later) widgets. Never imports ``server``."""
