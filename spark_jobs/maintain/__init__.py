"""Table upkeep: Delta OPTIMIZE and VACUUM of every table dlpipe writes."""
