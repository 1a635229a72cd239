from agentledger.command import main

main()
