// TCP echo server on 127.0.0.1:PORT (argv[1]), one connection: the "target" behind the relays.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
int main(int argc,char**argv){int l=socket(AF_INET,SOCK_STREAM,0);int one=1;setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,4);struct sockaddr_in in={.sin_family=AF_INET,.sin_port=htons(atoi(argv[1]))};
bind(l,(void*)&in,sizeof in);listen(l,1);int c=accept(l,0,0);setsockopt(c,IPPROTO_TCP,TCP_NODELAY,&one,4);char b[65536];for(;;){int r=read(c,b,sizeof b);if(r<=0)return 0;write(c,b,r);}}
