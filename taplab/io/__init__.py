"""Writers: everything that puts taplab's results on disk."""
