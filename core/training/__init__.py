"""Finetuning: methods (LoRA family, full), losses (SFT, MAR) and the training loop."""
