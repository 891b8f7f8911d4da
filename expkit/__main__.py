from expkit.cli import main

main()
