"""What differs per model family, as data (families.py), and the structures built from it."""
