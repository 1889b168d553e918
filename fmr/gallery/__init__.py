"""Find a person: galleries of enrolled people searched with FAISS (`fmr gallery`)."""
