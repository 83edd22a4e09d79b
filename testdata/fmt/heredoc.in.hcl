machine "db" {
    description = <<EOT
  This text stays exactly as written,
      with its own indentation   
EOT
    note = "after"
  script = <<-SCRIPT
        set -e
          echo "indented heredoc"
    SCRIPT
      z = 1
}
