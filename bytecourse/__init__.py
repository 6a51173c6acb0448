"""ByteCourse: ten visual-generation research techniques, built at toy scale on exact synthetic worlds."""

__version__ = "0.1.0"
