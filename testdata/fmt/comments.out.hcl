# A hash comment at the top.
// A slash comment at the top.
/* A block comment on one line. */
machine "db" {
  # indented hash comment
  site = site.onprem # trailing hash
  role = "database"  // trailing slashes
  tier = 1 /* trailing block */
  /*
   * A multi-line block comment:
   * its inner lines stay as written.
   */
  disk "system" {          # comment after a block opener
    path = "db/system.img" #   spaces inside the comment stay
  }
}
