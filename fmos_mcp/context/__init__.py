"""The Data Agent: the host's context window is the working set, the gateway's store the memory behind it.
Offload of large results, read-back tools, tool paging and search, skills, memory."""
