"""snip: being written (issue 3); registers nothing yet."""
