"""pbx-control: number masking (privacy numbers) beside FreeSWITCH or Asterisk."""

__version__ = "0.1.0"
