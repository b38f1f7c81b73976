"""One whole job per command (prune, train, stream, export, inspect), its report and gates; imports anything below cli."""
