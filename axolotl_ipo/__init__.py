"""axolotl-ipo: IPO for Axolotl with one flag, with pairs sampled from SFT data."""

__version__ = "0.1.0"
