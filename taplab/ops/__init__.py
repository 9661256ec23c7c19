"""The maths of taplab on plain arrays and tensors (no codec or runtime objects)."""
