"""Checkpoint exchange: import published checkpoints as runs, export runs for timm."""
