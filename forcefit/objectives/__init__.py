"""Objectives: loss terms and the training objectives built from them (supervised, DeNS, ...)."""
