from estatewatch.cli import main

main()
